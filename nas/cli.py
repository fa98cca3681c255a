"""The `nas` command: the commands of `nas.commands` under one group. No logic lives here.

`main()` is the entry point of `nas` and `python -m nas`. Errors end at one boundary,
`ErrorBoundary`, the class of the top-level command group: commands raise, they never exit on
their own for an error, and every error prints as one `error: ...` line with the exit code below.
"""

from __future__ import annotations

import os
from typing import Annotated, Any

import click
import typer
from typer.core import TyperGroup

from nas.infra.console import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_TERMINATED, err, fail
from nas.commands.arch import arch_app
from nas.commands.dashboard import dashboard_cmd
from nas.commands.data import data_app
from nas.commands.devices import devices_app
from nas.commands.finalize import finalize_cmd
from nas.commands.proxy_check import proxy_check_cmd
from nas.commands.report import report_cmd
from nas.commands.run import run_cmd
from nas.commands.teacher import teacher_app
from nas.errors import ConfigError, NasRuntimeError
from nas.infra.signals import Terminated
from nas.infra.third_party import VERBOSE_ENV

HELP = f"""Hardware-aware architecture search for on-device depth estimation.

Exit codes:
{EXIT_FAILED}: a failure during work (training, caching, export), or a check that found problems
{EXIT_BAD_INPUT}: bad input, found before work starts (arguments, config, space, hardware, data, model files)
{EXIT_INTERRUPTED}: interrupted (Ctrl-C)
{EXIT_TERMINATED}: stopped by SIGTERM (`nas run`: like Ctrl-C, the running trial is marked failed)"""

# What to do after Ctrl-C, per top-level command where there is more to say than "interrupted".
INTERRUPT_HINTS = {"run": "the running trial is marked failed; run the same command again to resume",
                   "proxy-check": "finished re-trainings are kept in the study; run the same command again "
                                  "to resume"}


class ErrorBoundary(TyperGroup):
    """The CLI's one error boundary: an error raised by any command ends here as one line and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            for problem in getattr(exc, "problems", ()):  # a data set check: every bad file, then the summary
                err.print(str(problem), highlight=False, soft_wrap=True)
            fail(str(exc), EXIT_BAD_INPUT)
        except NasRuntimeError as exc:
            fail(str(exc), EXIT_FAILED)
        except KeyboardInterrupt as exc:
            hint = INTERRUPT_HINTS.get(ctx.invoked_subcommand or "")
            what = f"terminated ({exc.signal_name})" if isinstance(exc, Terminated) else "interrupted"
            err.print(f"{what}: {hint}" if hint else what)
            raise typer.Exit(EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED) from None


app = typer.Typer(cls=ErrorBoundary, help=HELP, no_args_is_help=True, pretty_exceptions_enable=False)


@app.callback()
def options(verbose: Annotated[bool, typer.Option(
        "--verbose", metavar="", help="show other programs' output (TensorFlow, LiteRT, Optuna) on the terminal instead of "
                          "in the log file under RESULTS/logs")] = False) -> None:
    """Hardware-aware architecture search for on-device depth estimation."""
    if verbose:
        os.environ[VERBOSE_ENV] = "1"  # children (conversion server, workers it starts) see it too


app.add_typer(data_app, name="data")
app.add_typer(arch_app, name="arch")
app.add_typer(devices_app, name="devices")
app.add_typer(teacher_app, name="teacher")
app.command("run")(run_cmd)
app.command("finalize")(finalize_cmd)
app.command("proxy-check")(proxy_check_cmd)
app.command("dashboard")(dashboard_cmd)
app.command("report")(report_cmd)

def main() -> None:
    """The console entry point of `nas` and `python -m nas` (nas/__main__.py)."""
    app()
