"""Ed25519 key files and key ids.

A key id is the lowercase hex SHA-256 of the *raw* 32-byte public key (not of its DER form).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
)


def raw_public_key(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_id(key: Ed25519PublicKey) -> str:
    """Hex SHA-256 of the raw public key."""
    return hashlib.sha256(raw_public_key(key)).hexdigest()


def public_key_b64(key: Ed25519PublicKey) -> str:
    return base64.b64encode(raw_public_key(key)).decode()


def public_key_from_b64(text: str) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))


def save_private_key(key: Ed25519PrivateKey, path: Path) -> None:
    """Write a PEM private key readable by its owner only (created with mode 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)


def private_key_from_pem(pem: bytes, source: str = "the key") -> Ed25519PrivateKey:
    """An unencrypted PEM Ed25519 private key; ValueError names ``source`` otherwise."""
    try:
        key = load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise ValueError(f"{source} is not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{source} does not hold an Ed25519 private key")
    return key


def load_private_key(path: Path) -> Ed25519PrivateKey:
    return private_key_from_pem(path.read_bytes(), str(path))


def load_or_create_private_key(path: Path) -> Ed25519PrivateKey:
    """Load the key at ``path``, generating it the first time (race-safe across processes)."""
    if not path.exists():
        with contextlib.suppress(FileExistsError):
            save_private_key(Ed25519PrivateKey.generate(), path)
    return load_private_key(path)


def replace_private_key(path: Path, key: Ed25519PrivateKey) -> Path:
    """Put ``key`` in place of the key file at ``path`` atomically; return the old key's backup.

    The new key is written beside the old one (mode 0600) and renamed over it, so a process
    reading the file sees the old key or the new one, never a partial file. The old file is
    kept as a hard link (``<name>.retired``) until the caller deletes it or restores it with
    :func:`restore_private_key`.
    """
    fresh = path.with_name(path.name + ".new")
    backup = path.with_name(path.name + ".retired")
    for stale in (fresh, backup):
        stale.unlink(missing_ok=True)
    save_private_key(key, fresh)
    os.link(path, backup)
    os.replace(fresh, path)
    return backup


def restore_private_key(path: Path, backup: Path) -> None:
    """Undo :func:`replace_private_key` (the rotation it was part of did not commit)."""
    os.replace(backup, path)
