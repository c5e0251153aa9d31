"""One error hierarchy for the pure ledger core.

Every verification failure is a :class:`VerificationError` carrying the evidence a person needs
to act on it (which ``seq``, which hashes), so that callers never have to parse messages.
"""

from __future__ import annotations


class LedgerError(Exception):
    """Base class of every error raised by :mod:`controlplane.ledger`."""


class MalformedError(LedgerError):
    """An object could not be built because its input is not well formed."""


class VerificationError(LedgerError):
    """Something that was supposed to verify did not."""


class ProofError(VerificationError):
    """An inclusion or consistency proof did not verify."""


class RootMismatchError(ProofError):
    """The root computed from a proof differs from the expected root."""

    def __init__(self, expected: bytes, calculated: bytes) -> None:
        super().__init__(
            f"calculated root {calculated.hex()} does not match expected root {expected.hex()}"
        )
        self.expected = expected
        self.calculated = calculated


class SignatureError(VerificationError):
    """A signed note or envelope does not carry a valid signature by a trusted key."""


class ChainError(VerificationError):
    """An entry of the hash chain is wrong; ``seq`` names the first bad one."""

    def __init__(self, seq: int, reason: str) -> None:
        super().__init__(f"entry seq={seq}: {reason}")
        self.seq = seq
        self.reason = reason
