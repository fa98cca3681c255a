"""The CLI's one error boundary: one line per error, exit codes by kind, `python -m nas`."""

from __future__ import annotations

import os
import subprocess
import sys
import typing

import pytest
import typer
from typer.testing import CliRunner

from nas.cli import ErrorBoundary, app
from nas.config import BUDGETS, RunConfig
from nas.errors import ConfigError, TeacherError


def _raising(exc: BaseException) -> typer.Typer:
    """A two-command app under the boundary whose commands raise `exc`."""
    raising = typer.Typer(cls=ErrorBoundary)

    @raising.command("run")
    def run() -> None:
        raise exc

    @raising.command("other")
    def other() -> None:
        raise exc

    return raising


@pytest.mark.parametrize(("exc", "code", "output"), [
    (ConfigError("/data/x", "no RGB/depth pairs [rgb/ is empty]"), 2,
     "error: /data/x: no RGB/depth pairs [rgb/ is empty]\n"),
    (TeacherError(None, "teacher cache lacks training image(s) ['00003']"), 1,
     "error: teacher cache lacks training image(s) ['00003']\n"),
])
def test_errors_are_one_line_with_their_exit_code(exc: Exception, code: int, output: str) -> None:
    result = CliRunner().invoke(_raising(exc), ["other"])
    assert result.exit_code == code and result.output == output


def test_data_problems_are_listed_before_the_error_line() -> None:
    exc = ConfigError("/data", "2 problem(s) in the data set")
    exc.problems = ["a.png: unreadable [truncated]", "b.png: no depth"]
    result = CliRunner().invoke(_raising(exc), ["other"])
    assert result.exit_code == 2
    assert result.output.splitlines() == [*exc.problems, "error: /data: 2 problem(s) in the data set"]


def test_interrupt_exits_130_with_the_resume_hint_for_run() -> None:
    result = CliRunner().invoke(_raising(KeyboardInterrupt()), ["run"])
    assert result.exit_code == 130  # the line wraps at the console's width
    assert " ".join(result.output.split()) == ("interrupted: the running trial is marked failed; "
                                               "run the same command again to resume")
    result = CliRunner().invoke(_raising(KeyboardInterrupt()), ["other"])
    assert result.exit_code == 130 and result.output == "interrupted\n"


def test_bad_arch_is_bad_input_for_show_and_export(tmp_path) -> None:
    for args in (["arch", "show", "no_such_preset"], ["arch", "export", "no_such_preset", "--out", str(tmp_path)]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2 and result.output.startswith("error: 'no_such_preset' is neither a preset")


def test_python_m_nas_documents_exit_codes() -> None:
    proc = subprocess.run([sys.executable, "-m", "nas", "--help"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr
    assert "Exit codes:" in proc.stdout and "130: interrupted" in proc.stdout


def test_budget_names_of_the_config_are_the_budgets() -> None:
    assert set(typing.get_args(RunConfig.model_fields["budget"].annotation)) == set(BUDGETS)
