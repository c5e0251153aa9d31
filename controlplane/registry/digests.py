"""Content digests (``sha256:<hex>``) of files and directories.

A directory's digest is the SHA-256 of its manifest: one line ``<sha256 hex>  <posix path>``
per regular file, sorted by path, so the same tree gives the same digest on any machine.
Symbolic links are refused: they could point outside what is being registered.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

DIGEST_PATTERN = re.compile(r"sha256:[0-9a-f]{64}")
"""Use with ``fullmatch``."""
_CHUNK = 1 << 20


def digest_bytes(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _file_hex(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            sha.update(chunk)
    return sha.hexdigest()


def manifest(directory: Path) -> str:
    """The sorted manifest of a directory tree."""
    lines = []
    for path in sorted(directory.rglob("*"), key=lambda p: p.relative_to(directory).as_posix()):
        if path.is_symlink():
            raise ValueError(f"{path} is a symbolic link; refusing to digest it")
        relative = path.relative_to(directory).as_posix()
        if any(ord(char) < 32 or ord(char) == 127 for char in relative):
            raise ValueError(f"{relative!r} has a control character in its name; refusing it")
        if path.is_file():
            lines.append(f"{_file_hex(path)}  {path.relative_to(directory).as_posix()}\n")
    return "".join(lines)


def digest_path(path: Path) -> str:
    """Digest of a file, or of a directory's manifest."""
    if path.is_symlink():
        raise ValueError(f"{path} is a symbolic link; refusing to digest it")
    if path.is_dir():
        return digest_bytes(manifest(path).encode())
    return "sha256:" + _file_hex(path)
