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
from nas.config import BUDGETS, RunConfig, load_config
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


def test_sigterm_exits_143_with_the_resume_hint_for_run() -> None:
    from nas.infra.signals import Terminated

    result = CliRunner().invoke(_raising(Terminated()), ["run"])
    assert result.exit_code == 143
    assert " ".join(result.output.split()) == ("terminated (SIGTERM): the running trial is marked failed; "
                                               "run the same command again to resume")


def test_bad_arch_is_bad_input_for_show_and_export(tmp_path) -> None:
    for args in (["arch", "show", "no_such_preset"], ["arch", "export", "no_such_preset", "--out", str(tmp_path)]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2 and result.output.startswith("error: 'no_such_preset' is neither a preset")


def test_python_m_nas_documents_exit_codes() -> None:
    proc = subprocess.run([sys.executable, "-m", "nas", "--help"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr
    assert "Exit codes:" in proc.stdout and "130: interrupted" in proc.stdout
    assert "143: stopped by SIGTERM" in proc.stdout


def test_budget_names_of_the_config_are_the_budgets() -> None:
    assert set(typing.get_args(RunConfig.model_fields["budget"].annotation)) == set(BUDGETS)


def test_timing_before_training_is_on_by_default_except_at_the_smoke_budget(tmp_path) -> None:
    # auto: worth a conversion where training costs several (quick, full), not where it costs seconds.
    assert [RunConfig(budget=b).times_before_training for b in ("smoke", "quick", "full")] == [False, True, True]
    assert RunConfig(budget="smoke", time_before_training=True).times_before_training
    assert not RunConfig(budget="full", time_before_training=False).times_before_training
    assert not RunConfig(budget="full", objective="pareto").times_before_training  # no screen or pruner to feed
    config = tmp_path / "my.yaml"
    config.write_text("time_before_training: false\n")
    assert load_config(config).time_before_training is False
    config.write_text("time_before_training: sometimes\n")
    with pytest.raises(ConfigError, match="time_before_training"):
        load_config(config)


def test_brackets_in_any_printed_message_are_text_not_markup() -> None:
    from nas.infra.console import err, out

    for console in (out, err):
        with console.capture() as captured:
            console.print("connect with ssh -p 2222 [pi.local]:2222, then [/x] stays")
        assert "[pi.local]:2222" in captured.get() and "[/x]" in captured.get()


def test_a_config_file_that_is_not_utf8_is_named(tmp_path) -> None:
    config = tmp_path / "my.yaml"
    config.write_bytes("study: caf\xe9\n".encode("latin-1"))
    result = CliRunner().invoke(app, ["run", "--config", str(config)])
    assert result.exit_code == 2 and str(config) in result.output and "UTF-8" in result.output


def test_resuming_a_study_whose_space_changed_its_choices_is_refused_before_work_starts(tmp_path) -> None:
    import optuna

    storage = f"sqlite:///{tmp_path}/nas.db"
    study = optuna.create_study(storage=storage, study_name="depth-nas", direction="maximize")
    earlier = optuna.distributions.CategoricalDistribution(["tf_mobilenetv3_small_minimal_100", "lcnet_050"])
    study.add_trial(optuna.trial.create_trial(params={"backbone": "lcnet_050"}, distributions={"backbone": earlier},
                                              value=1.0))
    space = RunConfig().space.parent / "smoke.yaml"
    result = CliRunner().invoke(app, ["run", "--storage", storage, "--results", str(tmp_path / "r"),
                                      "--space", str(space)])
    text = " ".join(result.output.split())
    assert result.exit_code == 2 and str(space) in text and "was sampled from other choices" in text
    assert "backbone: choices [tf_mobilenetv3_small_minimal_100, lcnet_050] in the study" in text
    assert not (tmp_path / "r" / "data").exists()  # nothing generated, nothing trained
    assert len(optuna.load_study(study_name="depth-nas", storage=storage).trials) == 1


@pytest.mark.parametrize(("text", "words"), [
    ('{"decoder_channels": 5}', "decoder_channels must be a list of integers"),
    ('{"depth": "5"}', "depth must be an integer"),
    ('{"ffm": "yes"}', "ffm must be true or false"),
    ("[1, 2]", "must be an object"),
])
def test_arch_json_with_wrong_types_is_bad_input(tmp_path, text: str, words: str) -> None:
    (tmp_path / "arch.json").write_text(text)
    result = CliRunner().invoke(app, ["arch", "show", str(tmp_path / "arch.json")])
    assert result.exit_code == 2 and words in " ".join(result.output.split())


def test_teacher_commands_check_the_data_set_first(tmp_path) -> None:
    import numpy as np
    from PIL import Image

    from nas.data.synth import synthesize

    data = tmp_path / "data"
    synthesize(data, {"train": 2, "validation": 1}, seed=0, width=64, height=48)
    (data / "train" / "rgb" / "00000.png").write_bytes(b"\x89PNG broken")
    Image.fromarray(np.full((48, 64), 200, np.uint8)).save(data / "train" / "depth" / "00001.png")  # 8-bit
    for command in (["teacher", "train", "--budget", "smoke"], ["teacher", "cache"]):
        result = CliRunner().invoke(app, [*command, "--data", str(data), "--out", str(tmp_path / "t")])
        assert result.exit_code == 2, result.output
        text = " ".join(result.output.split())
        assert "00000.png: unreadable" in text and "00001.png: depth map has mode L" in text
        assert not (tmp_path / "t").exists()  # nothing started


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://nas:s3cret@db:5432/nas", "postgresql://nas:***@db:5432/nas"),
    ("postgresql://nas@db/nas?password=s3cret", "postgresql://nas@db/nas?password=***"),
    ("postgresql://nas@db/nas?sslmode=require&sslpassword=s3cret", "postgresql://nas@db/nas?sslmode=require&sslpassword=***"),
    ("postgresql://nas:s3cret@db/nas?PASSWORD=s3cret&application_name=nas",
     "postgresql://nas:***@db/nas?PASSWORD=***&application_name=nas"),
    ("mysql+pymysql://nas@db/nas?passwd=s3cret", "mysql+pymysql://nas@db/nas?passwd=***"),
    ("postgresql://nas@db/nas?password=s3%26cret", "postgresql://nas@db/nas?password=***"),
    ("sqlite:///results/nas.db", "sqlite:///results/nas.db"),
    ("not a url://nas:s3cret@db?password=s3cret", "not a url://nas:***@db?password=***"),  # unparsable: by pattern
])
def test_every_password_in_a_storage_url_is_masked(url: str, shown: str) -> None:
    from nas.infra.db import hide_password

    assert hide_password(url) == shown
    assert "s3" not in hide_password(url)


@pytest.mark.parametrize("url", ["postgresql://nas:s3cret@127.0.0.1:1/nas",  # nothing listens on port 1
                                 "postgresql://nas@127.0.0.1:1/nas?password=s3cret&sslpassword=s3cret"])
def test_an_unreachable_database_is_one_line_without_the_password(tmp_path, url: str) -> None:
    result = CliRunner().invoke(app, ["run", "--storage", url, "--results", str(tmp_path), "--space",
                                      str(RunConfig().space.parent / "smoke.yaml")])
    text = " ".join(result.output.split())
    assert result.exit_code == 2 and "cannot reach the study database" in text
    assert "s3cret" not in result.output and "postgresql://nas" in text and "@127.0.0.1:1/nas" in text
    assert "Traceback" not in result.output


def test_arch_show_prints_yaml_and_json_that_parse_back() -> None:
    import json

    import yaml

    shown = CliRunner().invoke(app, ["arch", "show", "litedepth"])
    assert shown.exit_code == 0
    info = yaml.safe_load(shown.output)
    assert info["arch"]["backbone"] == "tf_mobilenetv3_small_minimal_100" and info["params"] > 0
    as_json = CliRunner().invoke(app, ["arch", "show", "litedepth", "--json"])
    assert json.loads(as_json.output) == info


def test_data_check_says_how_many_pairs_it_checked(tmp_path) -> None:
    from nas.data.synth import synthesize

    synthesize(tmp_path / "data", {"train": 3, "validation": 2, "test": 1}, seed=0, width=64, height=48)
    result = CliRunner().invoke(app, ["data", "check", str(tmp_path / "data")])
    assert result.exit_code == 0
    assert "OK, 6 pairs checked (train 3, validation 2, test 1)" in result.output


def test_every_option_of_the_commands_has_a_help_text_and_flags_show_no_value() -> None:
    group = typer.main.get_command(app)

    def commands(cmd, path: str = "nas") -> list:  # typer's click command tree: groups have `commands`
        if hasattr(cmd, "commands"):
            return [c for name, sub in cmd.commands.items() for c in commands(sub, f"{path} {name}")]
        return [(path, cmd)]

    leaves = commands(group)
    assert {"nas run", "nas data synth", "nas data import nyu", "nas teacher train"} <= {p for p, _ in leaves}
    for path, command in leaves:
        options = [p for p in command.params if p.param_type_name == "option" and p.name != "help"]
        for option in options:
            assert option.help, f"{path} {option.opts[0]} has no help text"
        result = CliRunner().invoke(app, [*path.split()[1:], "--help"], terminal_width=120)
        assert result.exit_code == 0, (path, result.output)
        flags = [o.opts[0] for o in options if o.is_flag]
        rows = [line for line in result.output.splitlines() if any(f" {flag} " in line for flag in flags)]
        assert len(rows) >= len(flags) and not any("<bool>" in row for row in rows), (path, rows)
