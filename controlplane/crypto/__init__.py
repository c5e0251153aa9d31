"""Keys and signatures: Ed25519 key files and key ids (DSSE envelopes join later)."""
