"""The consoles every command prints to, the CLI's exit codes, and the one-line error exit."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console
from rich.text import Text

# Markup off: what we print is data (paths, hosts like `[pi.local]:2222`, lists), never rich markup.
# Colour comes from `style=` and `Text`.
out = Console(markup=False)
err = Console(stderr=True, markup=False)

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
