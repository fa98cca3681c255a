"""The consoles every command prints to, the CLI's exit codes, and the one-line error exit."""

from __future__ import annotations

import sys
from typing import NoReturn, TextIO

import typer
from rich.console import Console
from rich.text import Text

# Markup off: what we print is data (paths, hosts like `[pi.local]:2222`, lists), never rich markup.
# Colour comes from `style=` and `Text`.
# Not a terminal (CI, a log file): rich would cut lines at 80 columns and squeeze tables until every
# figure reads "…"; such output is read later, in an editor, so it gets wide lines instead.
LOG_WIDTH = 200


def _width(stream: TextIO) -> int | None:
    return None if stream.isatty() else LOG_WIDTH


# Nor are long lines broken there: a line of a log file is one message, whatever its length.
out = Console(markup=False, width=_width(sys.stdout), soft_wrap=not sys.stdout.isatty())
err = Console(stderr=True, markup=False, width=_width(sys.stderr), soft_wrap=not sys.stderr.isatty())

EXIT_FAILED = 1  # a failure during work, or a check that found problems
EXIT_BAD_INPUT = 2  # bad input, found before work starts (as click's own usage errors)
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT, as shells report it)
EXIT_TERMINATED = 143  # SIGTERM (128 + SIGTERM), handled like Ctrl-C by `nas run`


def fail(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    """Print `error: message` on stderr and exit with `code`.

    The message is printed as it is: a `[...]` in it (a list of file names, say) is text, not markup.
    """
    err.print(Text.assemble(("error:", "red"), " ", message), highlight=False, soft_wrap=True)
    raise typer.Exit(code)
