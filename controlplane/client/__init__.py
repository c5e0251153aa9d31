"""Client side: the HTTP client and the trust-nothing verifier used by the CLI and dashboard."""
