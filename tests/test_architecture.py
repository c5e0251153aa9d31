"""Import rules of the package, checked by parsing the source (nothing is imported).

- ``controlplane/ledger`` is pure: no storage, no ORM, no web, no CLI, no HTTP client.
- Domain code (everything under ``controlplane/`` except ``api/`` and ``cli/``) does not import
  FastAPI, Typer or Streamlit; interfaces call services, never the other way round.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "controlplane"
LEDGER_DIR = PACKAGE_DIR / "ledger"
INTERFACE_DIRS = ("api", "cli")

LEDGER_FORBIDDEN = (
    "controlplane.store",
    "sqlmodel",
    "sqlalchemy",
    "fastapi",
    "typer",
    "streamlit",
    "httpx",
)
DOMAIN_FORBIDDEN = ("fastapi", "typer", "streamlit")


def module_name(path: Path, root: Path) -> str:
    """Dotted module name of a file below ``root`` (``controlplane.ledger.merkle``)."""
    relative = path.relative_to(root).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, root: Path) -> Iterator[tuple[int, str]]:
    """Every module a file imports, absolute and dotted, with its line number.

    ``from x import y`` yields both ``x`` and ``x.y`` (``y`` may be a submodule, as in
    ``from controlplane import store``); relative imports are resolved against the package.
    Imports inside functions and ``if TYPE_CHECKING:`` blocks count too.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                if node.level > 1:
                    base_parts = base_parts[: -(node.level - 1)]
                base = ".".join([*base_parts, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            yield node.lineno, base
            for alias in node.names:
                if alias.name != "*":
                    yield node.lineno, f"{base}.{alias.name}"


def is_forbidden(module: str, forbidden: tuple[str, ...]) -> bool:
    return any(module == root or module.startswith(root + ".") for root in forbidden)


def violations(
    files: list[Path], forbidden: tuple[str, ...], root: Path = PACKAGE_DIR.parent
) -> list[str]:
    found: set[str] = set()
    for path in files:
        for line, module in imported_modules(path, root):
            if is_forbidden(module, forbidden):
                found.add(f"{path.relative_to(root)}:{line} imports {module}")
    return sorted(found)


def python_files(directory: Path) -> list[Path]:
    return sorted(path for path in directory.rglob("*.py") if "__pycache__" not in path.parts)


def test_ledger_is_pure() -> None:
    assert LEDGER_DIR.is_dir(), f"{LEDGER_DIR} is missing"
    files = python_files(LEDGER_DIR)
    names = {path.name for path in files}
    assert {"merkle.py", "entry.py", "checkpoint.py", "verify.py"} <= names, names
    problems = violations(files, LEDGER_FORBIDDEN)
    assert not problems, "the ledger core must stay pure:\n" + "\n".join(problems)


def test_domain_does_not_import_interfaces() -> None:
    assert PACKAGE_DIR.is_dir(), f"{PACKAGE_DIR} is missing"
    interface_dirs = [PACKAGE_DIR / name for name in INTERFACE_DIRS]
    files = [
        path
        for path in python_files(PACKAGE_DIR)
        if not any(path.is_relative_to(directory) for directory in interface_dirs)
    ]
    assert files
    problems = violations(files, DOMAIN_FORBIDDEN)
    assert not problems, "domain modules must not import web/CLI/UI frameworks:\n" + "\n".join(
        problems
    )


# ---------------------------------------------------------------------------------------------
# The checker itself
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "forbidden"),
    [
        ("import sqlalchemy", True),
        ("import sqlalchemy.orm as orm", True),
        ("from sqlmodel import Session", True),
        ("from controlplane.store.db import append", True),
        ("from controlplane import store", True),
        ("from .. import store", True),
        ("from ..store import engine", True),
        ("def f():\n    import httpx", True),
        ("if TYPE_CHECKING:\n    from fastapi import FastAPI", True),
        ("import fastapi_utils", False),
        ("import typing", False),
        ("from controlplane.storehouse import x", False),
        ("from controlplane.ledger import merkle", False),
        ("from . import merkle", False),
        ("import hashlib", False),
    ],
)
def test_checker_catches_forbidden_imports(tmp_path: Path, source: str, forbidden: bool) -> None:
    module = tmp_path / "controlplane" / "ledger" / "sample.py"
    module.parent.mkdir(parents=True)
    module.write_text(source + "\n", encoding="utf-8")
    assert bool(violations([module], LEDGER_FORBIDDEN, root=tmp_path)) is forbidden
