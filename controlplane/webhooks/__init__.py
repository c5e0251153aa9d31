"""Outgoing webhooks for governance events: a ledger-fed outbox, HMAC-signed, retried."""
