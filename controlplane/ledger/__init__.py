"""The pure ledger core: no database, no web.

Canonical JSON, entry hashing, RFC 6962 Merkle trees and proofs, C2SP signed-note checkpoints
and a streaming verifier. Storage hands stored nodes to these functions and never does tree
math itself.
"""

from controlplane.ledger.canonical import canonical_json, sha256_hex
from controlplane.ledger.checkpoint import Checkpoint, NoteVerifier, sign_note, verify_note
from controlplane.ledger.entry import GENESIS_HASH, Entry, compute_entry_hash, format_timestamp
from controlplane.ledger.errors import (
    ChainError,
    LedgerError,
    MalformedError,
    ProofError,
    RootMismatchError,
    SignatureError,
    VerificationError,
)
from controlplane.ledger.verify import ChainVerifier, VerificationReport, verify_ledger

__all__ = [
    "GENESIS_HASH",
    "ChainError",
    "ChainVerifier",
    "Checkpoint",
    "Entry",
    "LedgerError",
    "MalformedError",
    "NoteVerifier",
    "ProofError",
    "RootMismatchError",
    "SignatureError",
    "VerificationError",
    "VerificationReport",
    "canonical_json",
    "compute_entry_hash",
    "format_timestamp",
    "sha256_hex",
    "sign_note",
    "verify_ledger",
    "verify_note",
]
