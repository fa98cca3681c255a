"""Issue #27, item 8 and its bad-input list: a mistyped name or an unusable database, folder or file is one
`error:` line naming it, exit 2, before any work and without creating a file or a folder."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.study_builder import FakeTrial, build_study, make_config, searched
from typer.testing import CliRunner

import torch._dynamo  # noqa: F401  triton before TensorFlow (the reference model builder): the other order segfaults here
from nas.cli import app
from nas.config import RunConfig

SMOKE_SPACE = str(RunConfig().space.parent / "smoke.yaml")
UNREACHABLE = "postgresql://nas:s3cret@127.0.0.1:1/nas"  # nothing listens on port 1


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def invoke(tmp_path: Path, args: list[str]) -> tuple[int, str]:
    """Run `nas ARGS` in tmp_path (relative defaults such as results/ land there); exit code and one-line text."""
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        result = CliRunner().invoke(app, args)
    finally:
        os.chdir(cwd)
    assert "Traceback" not in result.output, result.output
    return result.exit_code, " ".join(result.output.split())


def one_error_line(text: str) -> None:
    assert text.startswith("error: ") and text.count("error:") == 1, text  # and nothing else: no note, no table


def write_local_profile(tmp_path: Path) -> Path:
    (tmp_path / "hw.yaml").write_text("name: here\nkind: local\n")
    return tmp_path / "hw.yaml"


# ---- item 8: mistyped names create nothing ----------------------------------------------------------------

@pytest.mark.parametrize("args", [
    ["report", "--study", "nope"],
    ["report", "--results", "typo"],
    ["report", "--storage", "sqlite:///typo/nas.db"],
    ["finalize", "--study", "nope"],
    ["finalize", "--results", "typo"],
    ["dashboard", "--results", "typo"],
    ["dashboard", "--storage", "sqlite:///typo/nas.db"],
])
def test_a_read_only_command_never_creates_a_study_database(tmp_path: Path, args: list[str]) -> None:
    code, text = invoke(tmp_path, args)
    assert code == 2
    one_error_line(text)
    assert "no study database at" in text and "nas.db" in text and "run `nas run` first" in text
    assert files_under(tmp_path) == []


def test_a_missing_study_in_an_existing_database_creates_nothing(tmp_path: Path) -> None:
    config = make_config(tmp_path / "results", study="there")
    build_study(config, [FakeTrial(searched("mobilenetv1_100"), si_rmse=0.3, latency_ms=10.0)])
    before = files_under(tmp_path)
    for command in (["report"], ["finalize"]):
        code, text = invoke(tmp_path, [*command, "--study", "nope", "--results", str(tmp_path / "results")])
        assert code == 2 and "no study 'nope'" in text, text
        one_error_line(text)
    assert files_under(tmp_path) == before


def test_nas_run_with_an_unreachable_database_creates_no_artifact_folder(tmp_path: Path) -> None:
    code, text = invoke(tmp_path, ["run", "--storage", UNREACHABLE, "--results", "r", "--space", SMOKE_SPACE,
                                   "--pretrained", "none"])
    assert code == 2 and "cannot reach the study database postgresql://nas:***@127.0.0.1:1/nas" in text
    one_error_line(text)
    assert "s3cret" not in text
    assert not (tmp_path / "r" / "artifacts").exists()


def test_devices_check_builds_nothing_before_its_checks(tmp_path: Path) -> None:
    profile = write_local_profile(tmp_path)
    code, text = invoke(tmp_path, ["devices", "check", str(profile), "--storage", "sqlite:///typo/nas.db"])
    assert code == 2 and "no study database at typo/nas.db" in text
    one_error_line(text)
    assert files_under(tmp_path) == ["hw.yaml"]  # no results/hardware/reference model, no typo/


# ---- unusable database URLs: one line, the password masked -------------------------------------------------

@pytest.mark.parametrize("url, words", [
    (UNREACHABLE, "cannot reach the study database postgresql://nas:***@127.0.0.1:1/nas"),
    ("mysql://nas:s3cret@127.0.0.1/nas", "mysql databases are not supported"),
    ("not a url", "is not a database URL"),
    ("sqlite://", "an in-memory database keeps no study"),
])
@pytest.mark.parametrize("command", [["report"], ["finalize"], ["devices", "check", "hw.yaml"]])
def test_an_unusable_database_url_is_one_line(tmp_path: Path, command: list[str], url: str, words: str) -> None:
    write_local_profile(tmp_path)
    code, text = invoke(tmp_path, [*command, "--storage", url])
    assert code == 2 and words in text, text
    one_error_line(text)
    assert "s3cret" not in text
    assert files_under(tmp_path) == ["hw.yaml"]


# ---- a results folder that is a file, or on a read-only file system ----------------------------------------

@pytest.mark.parametrize("command", [
    ["run", "--space", SMOKE_SPACE, "--results", "results", "--pretrained", "none"],
    ["report", "--results", "results"],
    ["finalize", "--results", "results"],
    ["devices", "check", "hw.yaml"],  # its results folder is ./results
])
def test_a_results_folder_that_is_a_file_is_one_line(tmp_path: Path, command: list[str]) -> None:
    write_local_profile(tmp_path)
    (tmp_path / "results").write_text("not a folder")
    code, text = invoke(tmp_path, command)
    assert code == 2 and "results: is a file, not a folder" in text, text
    one_error_line(text)
    assert files_under(tmp_path) == ["hw.yaml", "results"]


@pytest.fixture()
def read_only_results(tmp_path: Path) -> Iterator[Path]:
    """tmp_path/results: a read-only bind mount of a folder holding a study (root writes through mode bits, not
    through a read-only mount)."""
    source, folder = tmp_path / "source", tmp_path / "results"
    config = make_config(source, study="ro")
    build_study(config, [FakeTrial(searched("mobilenetv1_100"), si_rmse=0.3, latency_ms=10.0)])
    folder.mkdir()
    if subprocess.run(["mount", "--bind", str(source), str(folder)], capture_output=True).returncode != 0:
        pytest.skip("cannot bind-mount here (needs root); the 'is a file' case covers the check")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], check=True)
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.mark.parametrize("command", [
    ["run", "--space", SMOKE_SPACE, "--study", "ro", "--pretrained", "none"],
    ["report", "--study", "ro"],
    ["finalize", "--study", "ro"],
    ["devices", "check", "hw.yaml"],
])
def test_a_read_only_results_folder_is_one_line(tmp_path: Path, read_only_results: Path,
                                                command: list[str]) -> None:
    write_local_profile(tmp_path)
    args = command if command[0] == "devices" else [*command, "--results", str(read_only_results)]
    code, text = invoke(tmp_path, args)
    assert code == 2 and "cannot be written (read-only file system" in text, text
    one_error_line(text)


# ---- nas report: a truncated model is one warning; the folder is written whole or not at all -----------------

def _study_with_two_models(tmp_path: Path) -> RunConfig:
    from nas.config import load_config
    from nas.data.synth import synthesize
    from nas.hardware.check import build_reference_model

    model = build_reference_model(tmp_path / "m.tflite", 48, 64, 4)
    config = load_config(None, results=tmp_path / "results", study="cut", deploy_height=48, deploy_width=64)
    synthesize(config.data_root, {"train": 1, "validation": 1}, seed=0, width=64, height=48)
    build_study(config, [FakeTrial(searched("mobilenetv1_100"), si_rmse=0.3, latency_ms=10.0),
                         FakeTrial(searched("mobilenetv1_100"), si_rmse=0.31, latency_ms=11.0)], model=model)
    return config


def _truncate_model_of(config: RunConfig, number: int) -> None:
    import optuna
    from optuna.artifacts import get_all_artifact_meta

    study = optuna.load_study(study_name=config.study, storage=config.storage_url)
    trial = next(t for t in study.trials if t.number == number)
    meta = next(m for m in get_all_artifact_meta(trial, storage=study._storage) if m.filename == "model.tflite")
    stored = Path(config.artifacts_location) / meta.artifact_id
    stored.write_bytes(stored.read_bytes()[:100])


def test_a_truncated_model_in_the_artifact_store_is_one_warning(tmp_path: Path) -> None:
    config = _study_with_two_models(tmp_path)
    _truncate_model_of(config, 0)
    code, text = invoke(tmp_path, ["report", "--study", "cut", "--results", str(config.results),
                                   "--out", str(tmp_path / "report")])
    assert code == 0, text
    assert text.count("warning:") == 1 and "trial 0: its model.tflite in the artifact store cannot be run" in text
    assert (tmp_path / "report" / "report.html").is_file()
    assert (tmp_path / "report" / "preview-trial-0.png").is_file()  # the stored preview instead


def test_a_report_that_fails_leaves_the_earlier_report_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import nas.report.write as write

    config = make_config(tmp_path / "results", study="whole")
    build_study(config, [FakeTrial(searched("mobilenetv1_100"), si_rmse=0.3, latency_ms=10.0)])
    out = write.write_study_report(config, tmp_path / "report")
    before = {name: (out / name).read_bytes() for name in files_under(out)}

    def broken(content: object) -> str:
        raise RuntimeError("the page could not be drawn")

    monkeypatch.setattr(write, "render_page", broken)
    with pytest.raises(RuntimeError):
        write.write_study_report(config, out)
    assert {name: (out / name).read_bytes() for name in files_under(out)} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report", "results"]  # no staging folder left


# ---- names and files that are not UTF-8 ----------------------------------------------------------------------

def _data_with_a_name_that_is_not_utf8(root: Path) -> Path:
    """A tiny data set whose first training pair is renamed `\\xff\\xfe.png` (bytes no UTF-8 decoder reads)."""
    from helpers.teacher import tiny_data

    tiny_data(root, train=6, val=2)
    for sub in ("rgb", "depth"):
        folder = root / "train" / sub
        first = sorted(folder.iterdir())[0]
        os.rename(os.fsencode(first), os.path.join(os.fsencode(folder), b"\xff\xfe" + os.fsencode(first.suffix)))
    return root


@pytest.mark.parametrize("command", [
    ["run", "--data", "d", "--space", SMOKE_SPACE, "--results", "r", "--budget", "smoke", "--pretrained", "none"],
    ["teacher", "cache", "--data", "d", "--out", "t", "--budget", "smoke"],  # the teacher's data fingerprint
])
def test_a_data_file_name_that_is_not_utf8_is_refused_before_any_work(tmp_path: Path, command: list[str]) -> None:
    _data_with_a_name_that_is_not_utf8(tmp_path / "d")
    before = files_under(tmp_path)
    code, text = invoke(tmp_path, command)
    assert code == 2, text
    assert text.count("error:") == 1 and "error: d: 2 problem(s) in the data set" in text, text
    assert r"d/train/rgb/\xff\xfe.png: file name is not UTF-8; rename it" in text
    assert r"d/train/depth/\xff\xfe.png: file name is not UTF-8; rename it" in text
    assert files_under(tmp_path) == before  # no results folder, no study, no teacher folder


def test_data_check_names_a_file_name_that_is_not_utf8(tmp_path: Path) -> None:
    _data_with_a_name_that_is_not_utf8(tmp_path / "d")
    code, text = invoke(tmp_path, ["data", "check", "d"])
    assert code == 1 and r"d/train/rgb/\xff\xfe.png: file name is not UTF-8" in text and "OK" not in text, text


@pytest.mark.parametrize("command", [
    ["devices", "check", "hw.yaml"],
    ["run", "--hardware", "hw.yaml", "--space", SMOKE_SPACE, "--results", "r", "--pretrained", "none"],
])
def test_a_hardware_profile_that_is_not_utf8_is_one_line(tmp_path: Path, command: list[str]) -> None:
    (tmp_path / "hw.yaml").write_bytes(b"name: caf\xe9\nkind: local\n")  # Latin-1, not UTF-8
    code, text = invoke(tmp_path, command)
    assert code == 2, text
    one_error_line(text)
    assert "error: hw.yaml: not UTF-8 text (byte 9: invalid continuation byte); save the file as UTF-8" in text
    assert files_under(tmp_path) == ["hw.yaml"]


# ---- a search space with a list for a choice, or bounds that make no sense -------------------------------------

@pytest.mark.parametrize("param, words", [
    ("backbone:\n    choices: [[1, 2]]", "parameter 'backbone': choice [1, 2] is a list; each choice is one value"),
    ("distill_lambda:\n    choices: [[1, 2]]", "parameter 'distill_lambda': choice [1, 2] is a list"),
    ("skips:\n    per_stage: true\n    choices: [[add, concat]]", "parameter 'skips': choice ['add', 'concat'] is a list"),
    ("head:\n    choices: [{relu: 1}]", "parameter 'head': choice {'relu': 1} is a mapping"),
    ("distill_lambda:\n    low: -5\n    high: 1", "parameter 'distill_lambda': the distillation weight must be a finite "
                                                 "number of 0 or more, got -5"),
    ("distill_lambda:\n    choices: [0.5, .nan]", "parameter 'distill_lambda': the distillation weight must be a finite"),
    ("max_depth:\n    low: -5\n    high: 10", "parameter 'max_depth': choice -5 is invalid (max_depth must be a finite "
                                             "number of metres above 0"),
    ("max_depth:\n    choices: [.nan]", "parameter 'max_depth': choice nan is invalid (max_depth must be a finite"),
    ("max_depth:\n    low: 1\n    high: .inf", "parameter 'max_depth': low and high must both be finite numbers"),
    ("input_scale:\n    choices: ['0.0001']", "parameter 'input_scale': choice '0.0001' is invalid (input scale "
                                              "'0.0001': the internal image would be under 8 pixels"),
    ("decoder_channels:\n    per_stage: true\n    choices: [100000]", "parameter 'decoder_channels': choice 100000 is "
                                                                     "invalid (decoder stage 0 has 100000 channels; "
                                                                     "at most 4096)"),
])
def test_a_space_with_a_bad_choice_or_bound_is_one_line(tmp_path: Path, param: str, words: str) -> None:
    (tmp_path / "s.yaml").write_text(f"name: s\nparams:\n  {param}\n")
    code, text = invoke(tmp_path, ["run", "--space", "s.yaml", "--results", "r", "--budget", "smoke", "--trials", "1",
                                   "--pretrained", "none"])
    assert code == 2, text
    one_error_line(text)
    assert f"error: s.yaml: {words}" in text, text
    assert files_under(tmp_path) == ["s.yaml"]


# ---- settings out of bounds: the config file's key, or the flag -------------------------------------------------

@pytest.mark.parametrize("setting, words", [
    ("score_alpha: .nan", "score_alpha: Input should be a finite number"),
    ("score_alpha: .inf", "score_alpha: Input should be a finite number"),
    ("score_alpha: -1", "score_alpha: Input should be greater than 0"),
    ("distill_lambda: .inf", "distill_lambda: Input should be a finite number"),
    ("deploy_height: 100000", "deploy_height: Input should be less than or equal to 8192"),
    ("study: ''", "study: String should have at least 1 character"),
    ("study: ' demo'", "study: ' demo' has spaces around it"),
    ("data:\n  deploy_width: 100000", "deploy_width: Input should be less than or equal to 8192"),
    # Issue #29: the agreement margin is a share strictly between 0 and 1.
    ("reference_tolerance: 0", "reference_tolerance: Input should be greater than 0"),
    ("reference_tolerance: 1", "reference_tolerance: Input should be less than 1"),
    ("device:\n  reference_tolerance: 1.5", "reference_tolerance: Input should be less than 1"),
    ("reference_every: -1", "reference_every: Input should be greater than or equal to 0"),
    ("int8_drift_margin: 0", "int8_drift_margin: Input should be greater than 0"),
    ("device:\n  int8_drift_margin: 1.5", "int8_drift_margin: Input should be less than 1"),
    ("sustained_s: 0", "sustained_s: Input should be greater than 0"),
    ("device:\n  sustained_s: -30", "sustained_s: Input should be greater than 0"),
    ("sustained_s: .nan", "sustained_s: Input should be a finite number"),
    ("sustained_top: -1", "sustained_top: Input should be greater than or equal to 0"),
])
def test_a_config_value_out_of_bounds_is_one_line_naming_the_file_and_key(tmp_path: Path, setting: str,
                                                                          words: str) -> None:
    (tmp_path / "c.yaml").write_text(setting + "\n")
    code, text = invoke(tmp_path, ["run", "--config", "c.yaml", "--results", "r", "--space", SMOKE_SPACE])
    assert code == 2, text
    one_error_line(text)
    assert f"error: c.yaml: {words}" in text, text
    assert files_under(tmp_path) == ["c.yaml"]


@pytest.mark.parametrize("command", [
    ["run", "--study", "", "--results", "r", "--space", SMOKE_SPACE],
    ["report", "--study", "", "--results", "r"],
    ["finalize", "--study", " x ", "--results", "r"],
])
def test_a_bad_study_flag_is_one_line_naming_the_flag(tmp_path: Path, command: list[str]) -> None:
    code, text = invoke(tmp_path, command)
    assert code == 2, text
    one_error_line(text)
    assert text.startswith("error: --study: "), text
    assert files_under(tmp_path) == []


def test_an_agreement_margin_flag_out_of_bounds_is_one_line_naming_the_flag(tmp_path: Path) -> None:
    code, text = invoke(tmp_path, ["run", "--reference-tolerance", "1.5", "--results", "r", "--space", SMOKE_SPACE])
    assert code == 2, text
    one_error_line(text)
    assert text.startswith("error: --reference-tolerance: Input should be less than 1"), text
    assert files_under(tmp_path) == []


@pytest.mark.parametrize("command, words", [
    (["run", "--sustained-s", "0", "--results", "r", "--space", SMOKE_SPACE], "--sustained-s: Input should be greater than 0"),
    (["run", "--sustained-s", "nan", "--results", "r", "--space", SMOKE_SPACE], "--sustained-s: Input should be a finite"),
    (["run", "--sustained-top", "-2", "--results", "r", "--space", SMOKE_SPACE],
     "--sustained-top: Input should be greater than or equal to 0"),
    (["finalize", "--sustained-s", "-1", "--results", "r"], "--sustained-s: Input should be greater than 0"),
    (["devices", "check", "hw.yaml", "--sustained", "0"], "--sustained: seconds of sustained load must be a finite "
                                                          "number above 0, got 0 (leave the flag out for none)"),
    (["devices", "check", "hw.yaml", "--sustained", "-5"], "--sustained: seconds of sustained load must be a finite"),
])
def test_a_sustained_load_of_no_time_is_one_line_naming_the_flag(tmp_path: Path, command: list[str],
                                                                 words: str) -> None:
    write_local_profile(tmp_path)
    code, text = invoke(tmp_path, command)
    assert code == 2, text
    one_error_line(text)
    assert text.startswith(f"error: {words}"), text
    assert files_under(tmp_path) == ["hw.yaml"]


# ---- arch JSON: wrong types, values that make no sense, not UTF-8 ------------------------------------------------

@pytest.mark.parametrize("content, words", [
    (b'{"decoder_channels": 5}', "decoder_channels must be a list of integers, got 5"),
    (b'{"max_depth": -5}', "max_depth must be a finite number of metres above 0, got -5"),
    (b'{"max_depth": NaN}', "max_depth must be a finite number of metres above 0, got nan"),
    (b'{"max_depth": Infinity}', "max_depth must be a finite number of metres above 0, got inf"),
    (b'{"input_scale": "0.0001"}', "input scale '0.0001': the internal image would be under 8 pixels"),
    (b'{"decoder_channels": [100000, 128, 64, 32, 16]}', "decoder stage 0 has 100000 channels; at most 4096"),
    (b'{"head": "caf\xe9"}', "not UTF-8 text (byte 13: invalid continuation byte); save the file as UTF-8"),
])
@pytest.mark.parametrize("command", [["arch", "show", "--json"], ["arch", "export", "--out", "out"]])
def test_a_bad_arch_json_file_is_one_line_naming_it(tmp_path: Path, command: list[str], content: bytes,
                                                    words: str) -> None:
    (tmp_path / "a.json").write_bytes(content)
    code, text = invoke(tmp_path, [*command[:2], "a.json", *command[2:]])
    assert code == 2, text
    one_error_line(text)
    assert f"error: a.json: {words}" in text, text
    assert "NaN" not in text
    assert files_under(tmp_path) == ["a.json"]


def test_a_bad_arch_json_string_says_arch_json(tmp_path: Path) -> None:
    code, text = invoke(tmp_path, ["arch", "show", '{"max_depth": NaN}', "--json"])
    assert code == 2 and text == "error: arch JSON: max_depth must be a finite number of metres above 0, got nan", text


@pytest.mark.parametrize("margin", ["0", "-1", "1"])
def test_an_int8_drift_margin_outside_0_to_1_is_one_line_naming_the_flag(tmp_path: Path, margin: str) -> None:
    code, text = invoke(tmp_path, ["arch", "export", "litedepth", "--out", "out", "--precision", "int8",
                                   "--int8-drift-margin", margin])
    assert code == 2, text
    assert text == f"error: --int8-drift-margin: must be more than 0 and less than 1, got {margin}", text
    assert files_under(tmp_path) == []


# ---- an SSH port that accepts and never answers -------------------------------------------------------------

def test_an_ssh_port_that_never_answers_times_out_naming_host_and_port(tmp_path: Path) -> None:
    import socket

    from helpers.devices import write_profile

    with socket.socket() as mute:
        mute.bind(("127.0.0.1", 0))
        mute.listen(4)  # accepts (the kernel completes the handshake) and never says a word
        port = mute.getsockname()[1]
        (tmp_path / "known_hosts").write_text("")
        write_profile(tmp_path / "hw.yaml", {"name": "mute", "kind": "ssh", "host": "127.0.0.1", "port": port,
                                             "user": "nobody", "known_hosts": str(tmp_path / "known_hosts"),
                                             "connect_timeout_s": 1, "retries": 1, "retry_backoff_s": 0.1})
        code, table = invoke(tmp_path, ["devices", "check", "hw.yaml"])
    text = " ".join(table.replace("│", " ").split())  # the detail column, its wrapped lines joined
    assert code == 1, text  # devices check: an unusable device
    assert f"cannot connect to nobody@127.0.0.1:{port}: timed out after 1 s waiting for the SSH server's greeting" \
        in text, text
    assert f"check that 127.0.0.1:{port} is the device's sshd" in text
    assert "No existing session" not in text
    assert files_under(tmp_path) == ["hw.yaml", "known_hosts"]
