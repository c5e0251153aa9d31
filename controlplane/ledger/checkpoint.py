"""Checkpoints as C2SP signed notes (https://c2sp.org/signed-note, https://c2sp.org/tlog-checkpoint).

A checkpoint body is ``<origin>\\n<tree size>\\n<base64 root hash>\\n``; the signed note appends a
blank line and one ``— <key name> <base64(key id || signature)>`` line per signature. Key ids are
the first 4 bytes of ``SHA-256(name || 0x0A || 0x01 || raw Ed25519 public key)`` and verifier
keys are written ``<name>+<hex key id>+<base64(0x01 || public key)>``, exactly as the reference
implementation does, so standard note tooling reads our checkpoints.

Checkpoints are chained: each one after a ledger's first carries the extension line
``prev <tree size> <base64 SHA-256 of the previous checkpoint's whole signed note>``
(:class:`CheckpointLink`), under the signature like the rest of the body. So the signature of
the latest checkpoint protects every earlier one by hashing alone, and a checkpoint deleted
from the middle leaves its successor naming a size that is gone. A ledger's first checkpoint
has no predecessor and no link line (genesis), and so do checkpoints signed before links
existed; a checker (:class:`controlplane.ledger.verify.LinkChain`) starts the chain at the
first linked one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from controlplane.ledger.errors import MalformedError, SignatureError

ALG_ED25519 = 0x01
SIGNATURE_PREFIX = "\u2014 "  # em dash and a space
LINK_KEYWORD = "prev"
_NAME = re.compile(r"[^\s+]+")
_DECIMAL = re.compile(r"0|[1-9][0-9]*")


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def note_key_id(name: str, public_key: Ed25519PublicKey) -> bytes:
    """The 4-byte key id of a note verifier key."""
    digest = hashlib.sha256(name.encode() + b"\n" + bytes([ALG_ED25519]) + _raw_public(public_key))
    return digest.digest()[:4]


@dataclass(frozen=True)
class NoteVerifier:
    """A named Ed25519 note verifier key."""

    name: str
    key_id: bytes
    public_key: Ed25519PublicKey

    @classmethod
    def from_public_key(cls, name: str, public_key: Ed25519PublicKey) -> NoteVerifier:
        if not _NAME.fullmatch(name):
            raise MalformedError(f"invalid note key name {name!r}")
        return cls(name, note_key_id(name, public_key), public_key)

    @classmethod
    def parse(cls, text: str) -> NoteVerifier:
        """Parse ``name+hexid+base64key`` and check that the id matches the key."""
        parts = text.strip().split("+", 2)  # base64 may itself contain "+"
        if len(parts) != 3:
            raise MalformedError("verifier key must be name+keyid+key")
        name, hex_id, encoded = parts
        try:
            key_id = bytes.fromhex(hex_id)
            raw = base64.b64decode(encoded, validate=True)
        except (ValueError, binascii.Error) as exc:
            raise MalformedError(f"verifier key is not well encoded: {exc}") from exc
        if len(key_id) != 4 or len(raw) != 33 or raw[0] != ALG_ED25519:
            raise MalformedError("verifier key is not an Ed25519 note key")
        public_key = Ed25519PublicKey.from_public_bytes(raw[1:])
        verifier = cls.from_public_key(name, public_key)
        if verifier.key_id != key_id:
            raise MalformedError("verifier key id does not match its key")
        return verifier

    def __str__(self) -> str:
        raw = bytes([ALG_ED25519]) + _raw_public(self.public_key)
        return f"{self.name}+{self.key_id.hex()}+{base64.b64encode(raw).decode()}"

    @property
    def key_id_hex(self) -> str:
        return self.key_id.hex()


def sign_note(text: str, name: str, private_key: Ed25519PrivateKey) -> str:
    """Sign ``text`` (which must end in a newline) and return the signed note."""
    if not text.endswith("\n"):
        raise MalformedError("note text must end with a newline")
    verifier = NoteVerifier.from_public_key(name, private_key.public_key())
    signature = private_key.sign(text.encode())
    blob = base64.b64encode(verifier.key_id + signature).decode()
    return f"{text}\n{SIGNATURE_PREFIX}{name} {blob}\n"


def split_note(note: str) -> tuple[str, list[tuple[str, bytes, bytes]]]:
    """Split a signed note into its text and ``(name, key id, signature)`` triples."""
    text, sep, signatures = note.rpartition("\n\n")
    if not sep:
        raise MalformedError("signed note has no signature block")
    text += "\n"
    parsed: list[tuple[str, bytes, bytes]] = []
    for line in signatures.split("\n"):
        if not line:
            continue
        if not line.startswith(SIGNATURE_PREFIX):
            raise MalformedError(f"malformed signature line {line!r}")
        try:
            name, blob = line[len(SIGNATURE_PREFIX) :].split(" ")
            raw = base64.b64decode(blob, validate=True)
        except (ValueError, binascii.Error) as exc:
            raise MalformedError(f"malformed signature line {line!r}") from exc
        if len(raw) < 5:
            raise MalformedError("signature is too short")
        parsed.append((name, raw[:4], raw[4:]))
    if not parsed:
        raise MalformedError("signed note has no signatures")
    return text, parsed


def verify_note(note: str, verifiers: list[NoteVerifier]) -> str:
    """Return the note's text if at least one signature is valid for a known verifier.

    Signatures by unknown keys are ignored (a note may carry witness cosignatures); a
    signature by a known key that does not verify fails the whole note.
    """
    text, signatures = split_note(note)
    verified = False
    for name, key_id, signature in signatures:
        for verifier in verifiers:
            if verifier.name == name and verifier.key_id == key_id:
                try:
                    verifier.public_key.verify(signature, text.encode())
                except InvalidSignature:
                    raise SignatureError(f"invalid signature by {name}") from None
                verified = True
    if not verified:
        raise SignatureError("note is not signed by any trusted key")
    return text


def note_digest(note: str) -> bytes:
    """SHA-256 of a whole signed note (body and signature lines): what a link commits to."""
    return hashlib.sha256(note.encode()).digest()


@dataclass(frozen=True)
class CheckpointLink:
    """The ``prev <size> <base64 note hash>`` extension line: which checkpoint came before.

    The hash is over the previous checkpoint's full signed note as stored, so the link pins
    that exact note (its own link included), not just its size and root.
    """

    size: int
    note_hash: bytes

    @classmethod
    def to(cls, size: int, note: str) -> CheckpointLink:
        """The link to the checkpoint of ``size`` whose signed note is ``note``."""
        return cls(size, note_digest(note))

    def line(self) -> str:
        return f"{LINK_KEYWORD} {self.size} {base64.b64encode(self.note_hash).decode()}"

    def names(self, note: str) -> bool:
        """Whether ``note`` is the very note this link commits to."""
        return note_digest(note) == self.note_hash

    @classmethod
    def parse(cls, line: str) -> CheckpointLink | None:
        """The link an extension line states; None for another extension."""
        keyword, _, rest = line.partition(" ")
        if keyword != LINK_KEYWORD:
            return None
        size_text, _, hash_text = rest.partition(" ")
        if not _DECIMAL.fullmatch(size_text) or size_text == "0":
            raise MalformedError(f"checkpoint link size {size_text!r} is not a positive number")
        try:
            note_hash = base64.b64decode(hash_text, validate=True)
        except binascii.Error as exc:
            raise MalformedError("checkpoint link hash is not base64") from exc
        if len(note_hash) != 32:
            raise MalformedError("checkpoint link hash must be 32 bytes")
        return cls(int(size_text), note_hash)


@dataclass(frozen=True)
class Checkpoint:
    """A parsed checkpoint body: origin, tree size, root hash and any extension lines."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def body(self) -> str:
        lines = [self.origin, str(self.size), base64.b64encode(self.root_hash).decode()]
        return "\n".join([*lines, *self.extensions]) + "\n"

    def sign(self, name: str, private_key: Ed25519PrivateKey) -> str:
        return sign_note(self.body(), name, private_key)

    @classmethod
    def linked(
        cls, origin: str, size: int, root_hash: bytes, previous: CheckpointLink | None
    ) -> Checkpoint:
        """A checkpoint whose first extension line links it to ``previous`` (if any)."""
        return cls(origin, size, root_hash, () if previous is None else (previous.line(),))

    @property
    def link(self) -> CheckpointLink | None:
        """The link to the previous checkpoint, or None (a first or pre-link checkpoint)."""
        links = [link for line in self.extensions if (link := CheckpointLink.parse(line))]
        return links[0] if links else None

    @classmethod
    def parse_body(cls, text: str) -> Checkpoint:
        lines = text.split("\n")
        if len(lines) < 4 or lines[-1] != "":
            raise MalformedError("checkpoint body must have origin, size and root lines")
        origin, size_text, root_text, *extensions = lines[:-1]
        if not origin:
            raise MalformedError("checkpoint origin is empty")
        if not _DECIMAL.fullmatch(size_text):
            raise MalformedError(f"checkpoint size {size_text!r} is not a decimal number")
        try:
            root = base64.b64decode(root_text, validate=True)
        except binascii.Error as exc:
            raise MalformedError("checkpoint root is not base64") from exc
        if len(root) != 32:
            raise MalformedError("checkpoint root must be 32 bytes")
        if "" in extensions:
            raise MalformedError("checkpoint extension lines must not be empty")
        links = [link for line in extensions if (link := CheckpointLink.parse(line))]
        if len(links) > 1:
            raise MalformedError("checkpoint has more than one link line")
        if links and links[0].size >= int(size_text):
            raise MalformedError(
                f"checkpoint for size {size_text} links to a checkpoint at size "
                f"{links[0].size}, which is not smaller"
            )
        return cls(origin, int(size_text), root, tuple(extensions))

    @classmethod
    def open(cls, note: str, verifiers: list[NoteVerifier]) -> Checkpoint:
        """Verify a signed checkpoint note and parse it."""
        return cls.parse_body(verify_note(note, verifiers))
