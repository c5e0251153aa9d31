"""Validation of identifiers used in paths, subjects and policies.

Names never contain ``/``, ``..`` or whitespace, so they are safe in URLs, file names and casbin
rules alike.
"""

from __future__ import annotations

import re

from controlplane.errors import InvalidInput

_PROJECT = re.compile(r"[a-z0-9][a-z0-9._-]{0,99}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
_PRINCIPAL = re.compile(r"[a-z0-9][a-z0-9._@-]{0,99}")


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
