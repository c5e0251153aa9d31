"""Usage errors as one line on stderr, like every other error of the CLI.

Typer draws click's usage errors in a boxed, terminal-width panel that wraps long paths and
spans several lines; scripts and people grepping CI logs want ``error: ...`` on one line with
exit code 2. This group runs click in non-standalone mode and formats the error itself.
(Typer 0.29 ships its own copy of click as ``typer._click``; its exceptions are the ones raised.)
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Sequence
from typing import Any

import typer
from typer._click import core as click_core
from typer._click import exceptions as click  # typer bundles its own click
from typer.core import TyperGroup

from controlplane.cli.common import EXIT_USAGE, err


def _hint(error: click.UsageError) -> str:
    ctx = error.ctx
    if ctx is None:
        return ""
    return f" (see '{ctx.command_path} --help')"


def reflow(text: str) -> str:
    """Docstring prose as paragraphs: single line breaks become spaces.

    Typer's rich help keeps every line break of a docstring after its first paragraph (and in
    the command lists, of the first paragraph too), so source wrapped at 100 columns came out
    as ragged lines cut mid-sentence. Paragraphs marked ``\\b`` and lists (lines starting
    with ``-`` or ``*``, or indented) keep their lines.
    """
    paragraphs = []
    for paragraph in inspect.cleandoc(text).split("\n\n"):
        lines = paragraph.split("\n")
        keep = paragraph.startswith("\b") or any(line[:1] in (" ", "-", "*") for line in lines[1:])
        paragraphs.append(paragraph if keep else " ".join(line.strip() for line in lines))
    return "\n\n".join(paragraphs)


def _reflow_all(command: click_core.Command) -> None:
    if command.help:
        command.help = reflow(command.help)
    if command.short_help:
        command.short_help = reflow(command.short_help)
    for sub in getattr(command, "commands", {}).values():
        _reflow_all(sub)


class OneLineErrorGroup(TyperGroup):
    """The root command group: one-line usage errors, stable exit codes, reflowed help."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        _reflow_all(self)
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.NoArgsIsHelpError as exc:
            exc.show()
            code = exc.exit_code
        except click.UsageError as exc:
            message = " ".join(exc.format_message().split())
            err.print(f"error: {message}{_hint(exc)}", markup=False)
            code = exc.exit_code or EXIT_USAGE
        except click.ClickException as exc:
            err.print(f"error: {' '.join(exc.format_message().split())}", markup=False)
            code = exc.exit_code
        except typer.Abort:
            err.print("error: aborted", markup=False)
            code = 130
        sys.exit(code if isinstance(code, int) else 0)
