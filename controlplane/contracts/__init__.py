"""Signed data contracts: in-toto statements in DSSE envelopes, registered and revocable."""
