"""The transparency-dev/merkle RFC 6962 proof vectors, one test per file.

The vectors live outside the repository, in ``<workspace>/shared/conformance/rfc6962`` (see its
README). ``CONTROLPLANE_CONFORMANCE_DIR`` overrides the location; it may name either the
``rfc6962`` directory itself or the ``conformance`` directory above it.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import pytest

from controlplane.ledger import merkle
from controlplane.ledger.errors import LedgerError

ENV_VAR = "CONTROLPLANE_CONFORMANCE_DIR"
RELATIVE = Path("shared/conformance/rfc6962")
EXPECTED_INCLUSION = 98
EXPECTED_CONSISTENCY = 98


def candidate_dirs() -> list[Path]:
    """Where the vectors may be, most specific first."""
    override = os.environ.get(ENV_VAR)
    if override:
        # An explicit setting is the only place looked at: a wrong one must not be papered over.
        base = Path(override).expanduser().resolve()
        return [base, base / "rfc6962"]
    candidates: list[Path] = []
    here = Path(__file__).resolve()
    # The documented place: <workspace>/shared/... next to the repository checkout.
    candidates.append(here.parents[3] / RELATIVE)
    # Robustness for other checkouts (worktrees, CI): any ancestor's shared/ directory.
    candidates += [parent / RELATIVE for parent in here.parents]
    # The copy kept in the repository, so a clone anywhere runs every vector.
    candidates.append(here.parents[1] / "conformance" / "rfc6962")
    return candidates


def find_vectors_dir() -> Path | None:
    for candidate in candidate_dirs():
        if (candidate / "inclusion").is_dir() and (candidate / "consistency").is_dir():
            return candidate
    return None


VECTORS_DIR = find_vectors_dir()


def vector_files(kind: str) -> list[Path]:
    if VECTORS_DIR is None:
        return []
    return sorted((VECTORS_DIR / kind).rglob("*.json"))


def vector_id(path: Path) -> str:
    assert VECTORS_DIR is not None
    return path.relative_to(VECTORS_DIR).as_posix()


INCLUSION_FILES = vector_files("inclusion")
CONSISTENCY_FILES = vector_files("consistency")


def b64(value: str) -> bytes:
    return base64.b64decode(value, validate=True)


def load(path: Path) -> dict[str, Any]:
    case = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(case, dict), path
    assert isinstance(case.get("wantErr"), bool), f"{path}: wantErr must be a boolean"
    return case


def proof_of(case: dict[str, Any]) -> list[bytes]:
    return [b64(item) for item in case["proof"] or []]


def test_vectors_are_present() -> None:
    searched = "\n  ".join(str(path) for path in candidate_dirs())
    assert VECTORS_DIR is not None, (
        f"RFC 6962 conformance vectors not found; set {ENV_VAR} or create one of:\n  {searched}"
    )
    assert len(INCLUSION_FILES) == EXPECTED_INCLUSION, (
        f"expected {EXPECTED_INCLUSION} inclusion vectors under {VECTORS_DIR}, "
        f"found {len(INCLUSION_FILES)}"
    )
    assert len(CONSISTENCY_FILES) == EXPECTED_CONSISTENCY, (
        f"expected {EXPECTED_CONSISTENCY} consistency vectors under {VECTORS_DIR}, "
        f"found {len(CONSISTENCY_FILES)}"
    )
    # Both outcomes are exercised, so a verifier that always accepts (or rejects) cannot pass.
    for files in (INCLUSION_FILES, CONSISTENCY_FILES):
        outcomes = {load(path)["wantErr"] for path in files}
        assert outcomes == {True, False}


@pytest.mark.parametrize("path", INCLUSION_FILES, ids=vector_id)
def test_inclusion_vector(path: Path) -> None:
    case = load(path)

    def verify() -> None:
        merkle.verify_inclusion(
            case["leafIdx"],
            case["treeSize"],
            b64(case["leafHash"]),
            proof_of(case),
            b64(case["root"]),
        )

    if case["wantErr"]:
        with pytest.raises(LedgerError):
            verify()
    else:
        verify()
        computed = merkle.root_from_inclusion_proof(
            case["leafIdx"], case["treeSize"], b64(case["leafHash"]), proof_of(case)
        )
        assert computed == b64(case["root"])


@pytest.mark.parametrize("path", CONSISTENCY_FILES, ids=vector_id)
def test_consistency_vector(path: Path) -> None:
    case = load(path)

    def verify() -> None:
        merkle.verify_consistency(
            case["size1"], case["size2"], b64(case["root1"]), b64(case["root2"]), proof_of(case)
        )

    if case["wantErr"]:
        with pytest.raises(LedgerError):
            verify()
    else:
        verify()
