"""Promotion governance: stages, rules, signed sign-offs, quorum, gates, rollback."""
