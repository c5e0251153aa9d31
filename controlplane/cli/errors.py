"""Usage errors as one line on stderr, like every other error of the CLI.

Typer draws click's usage errors in a boxed, terminal-width panel that wraps long paths and
spans several lines; scripts and people grepping CI logs want ``error: ...`` on one line with
exit code 2. This group runs click in non-standalone mode and formats the error itself.
(Typer 0.29 ships its own copy of click as ``typer._click``; its exceptions are the ones raised.)
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import typer
from typer._click import exceptions as click  # typer bundles its own click
from typer.core import TyperGroup

from controlplane.cli.common import EXIT_USAGE, err


def _hint(error: click.UsageError) -> str:
    ctx = error.ctx
    if ctx is None:
        return ""
    return f" (see '{ctx.command_path} --help')"


class OneLineErrorGroup(TyperGroup):
    """The root command group: one-line usage errors, stable exit codes."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
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
