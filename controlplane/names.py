"""Validation of identifiers used in paths, subjects and policies.

Names never contain ``/``, ``..`` or whitespace, so they are safe in URLs, file names and casbin
rules alike.
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import unquote, urlsplit

from controlplane.errors import InvalidInput

_PROJECT = re.compile(r"[a-z0-9][a-z0-9._-]{0,99}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
_PRINCIPAL = re.compile(r"[a-z0-9][a-z0-9._@-]{0,99}")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
# bidirectional formatting characters, which RFC 3987 (section 4.1) bars from IRIs
_BIDI = frozenset("\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
MAX_URI = 4096


def _check(pattern: re.Pattern[str], value: object, what: str, rule: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value) or ".." in value:
        raise InvalidInput(f"invalid {what} {value!r}: {rule}")
    return value


def project(value: object) -> str:
    return _check(
        _PROJECT, value, "project", "use 1-100 of a-z 0-9 . _ - starting with a letter or digit"
    )


def artifact_name(value: object) -> str:
    return _check(
        _NAME, value, "name", "use 1-200 of A-Z a-z 0-9 . _ - starting with a letter or digit"
    )


def principal_id(value: object) -> str:
    return _check(
        _PRINCIPAL,
        value,
        "principal id",
        "use 1-100 of a-z 0-9 . _ @ - starting with a letter or digit",
    )


def uri(value: object) -> str:
    """An artifact's location: an absolute URI (with a scheme) of at most 4096 characters,
    with no control, surrogate or bidirectional formatting character and no ``..`` segment,
    plain or percent-encoded.

    The server never follows a URI, but runners and people do: ``s3://b/models/../secrets``
    is not where it seems to point, and a right-to-left override makes ``file:///exe.gpj``
    read as ``file:///jpg.exe``. ``file://`` URIs are fine: runners on a shared file system
    read them, and check the bytes against the digest.
    """
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_URI:
        raise InvalidInput(f"uri must be a non-empty string of at most {MAX_URI} characters")
    if any(c in _BIDI or unicodedata.category(c) in ("Cc", "Cs") for c in value):
        raise InvalidInput(
            "uri must not contain control, surrogate or bidirectional formatting characters"
        )
    if not _SCHEME.match(value):
        raise InvalidInput(f"uri must be absolute (s3://..., file:///...), got {value[:80]!r}")
    decoded = value
    for _ in range(3):  # %252e%252e is %2e%2e is ..
        decoded = unquote(decoded)
    parts = urlsplit(decoded)
    if ".." in re.split(r"[/\\]", parts.netloc + "/" + parts.path):
        raise InvalidInput(f"uri must not contain '..' segments, got {value[:80]!r}")
    return value
