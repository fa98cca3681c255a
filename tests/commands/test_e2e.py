"""End to end through the real CLI: `nas run` (smoke budget, 2 trials) then `nas finalize`."""

import fcntl
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from helpers import REPO
from optuna.artifacts import get_all_artifact_meta

from nas.hardware.local import LOCK_ENV

NAS = str(Path(sys.executable).parent / "nas")


def nas(*args, cwd, check=True):
    proc = subprocess.run([NAS, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=1500)
    if check and proc.returncode != 0:
        raise AssertionError(f"nas {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    # Whatever went wrong, a user sees one line: a traceback anywhere is a bug, even when the exit code is right.
    assert "Traceback" not in proc.stdout + proc.stderr, f"nas {' '.join(map(str, args))}:\n{proc.stderr}"
    return proc


FLOOR = 5.0  # an accuracy floor every smoke model meets: each trial is judged against it and stays feasible


@pytest.fixture(scope="module")
def search(tmp_path_factory):
    work = tmp_path_factory.mktemp("e2e")
    config = work / "config.yaml"
    config.write_text(
        f"space: {REPO / 'search_spaces' / 'smoke.yaml'}\n"
        "budget: smoke\ntrials: 2\nstudy: e2e\nsynth_train: 10\nsynth_val: 2\nsynth_test: 1\n"
        f"max_si_rmse: {FLOOR}\n"
        "device:\n  sustained_top: 1\n  sustained_s: 0.5\n"  # the best so far is timed under load too
    )
    proc = nas("run", "--config", config, "--results", work / "results", cwd=work)
    return work, config, proc


@pytest.mark.slow
def test_run_records_every_contract_field(search):
    work, _, proc = search
    assert "best trials" in proc.stdout and "optuna-dashboard" in proc.stdout
    # What the budget's figures are worth, and the way to a usable model.
    assert "coarse blob" in proc.stdout and "nas finalize --study e2e --budget full" in proc.stdout
    # Output to a pipe (a log file, CI): the table is whole, not squeezed into 80 columns of "…".
    header = next(line for line in proc.stdout.splitlines() if "trial" in line and "score" in line)
    assert all(name in header for name in ("si-RMSE", "latency ms", "backbone", "precision")) and "…" not in header
    storage = f"sqlite:///{work / 'results' / 'nas.db'}"
    study = optuna.load_study(study_name="e2e", storage=storage)
    assert study.metric_names == ["final_score"]
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(study.trials) == 2 and complete
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL], \
        [t.user_attrs.get("fail_reason") for t in study.trials]
    for t in complete:
        a = t.user_attrs
        for key in ("arch", "arch_id", "si_rmse", "rmse", "log10", "rel", "latency_ms", "latency_p90_ms",
                    "latency_std_ms", "device", "threads", "params", "macs", "tflite_sha256", "tflite_bytes",
                    "stage_seconds"):
            assert key in a, key
        assert set(a["stage_seconds"]) == {"train", "export", "evaluate", "measure"}
        assert a["latency_p90_ms"] >= a["latency_ms"] > 0
        assert t.value == pytest.approx(2 ** (-10 * a["si_rmse"]) / (a["latency_ms"] / 1000))
        assert t.constraints == {"si_rmse": pytest.approx(a["si_rmse"] - FLOOR)} and a["max_si_rmse"] == FLOOR
        names = {m.filename for m in get_all_artifact_meta(t, storage=study._storage)}
        assert "model.tflite" in names and "preview.png" in names and f"arch-{a['arch_id']}.json" in names
    # sustained_top 1: a trial that was the best so far when it finished was timed under load; the best is one.
    loaded = study.best_trial.user_attrs["sustained"]
    assert loaded["seconds"] == 0.5 and loaded["invokes"] > 0 and loaded["rank"] == 1 and loaded["samples"]
    assert "in the top 1 (rank 1), timing 0.5 s under sustained load" in proc.stdout + proc.stderr
    assert study.best_trial.value == pytest.approx(2 ** (-10 * study.best_trial.user_attrs["si_rmse"])
                                                   / (study.best_trial.user_attrs["latency_ms"] / 1000))


@pytest.mark.slow
def test_rerun_resumes_without_new_trials(search):
    work, config, _ = search
    proc = nas("run", "--config", config, "--results", work / "results", cwd=work)
    assert "already has 2 finished trials" in proc.stderr + proc.stdout
    # Another floor would judge new trials by another rule than the finished ones: a configuration error (exit
    # 2), before any work.
    changed = nas("run", "--config", config, "--results", work / "results", "--max-si-rmse", "0.3", cwd=work,
                  check=False)
    assert changed.returncode == 2 and f"created with max_si_rmse {FLOOR:g}, this run asks for 0.3" in changed.stderr


def finalize_beside_a_busy_runner(args: list, work: Path, lock: Path) -> str:
    """`nas finalize ARGS` while the test holds the device's runner lock (another runner timing on it) until the
    command says it waits, and a few polls more; its whole output."""
    log = work / "finalize.log"
    with open(lock, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with open(log, "w") as sink:
            proc = subprocess.Popen([NAS, *map(str, args)], cwd=work, stdout=sink, stderr=subprocess.STDOUT,
                                    env={**os.environ, LOCK_ENV: str(lock)})
        deadline = time.monotonic() + 1500
        while "waiting (up to" not in log.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"finalize never waited for the busy device:\n{log.read_text()}")
            time.sleep(0.5)
        time.sleep(3)  # a few polls while busy
    code = proc.wait(timeout=1500)
    text = log.read_text()
    assert code == 0 and "Traceback" not in text, text
    return text


@pytest.mark.slow
def test_finalize_ships_the_best_trial(search):
    """The release, timed after waiting for a device another runner was timing on; a rerun reuses the training."""
    work, _, _ = search
    out = work / "final"
    args = ["finalize", "--study", "e2e", "--results", work / "results", "--budget", "smoke",
            "--storage", f"sqlite:///{work / 'results' / 'nas.db'}", "--out", out, "--sustained-s", "1"]
    text = finalize_beside_a_busy_runner(args, work, work / "runner.lock")
    assert "busy, another runner is timing on this device; waiting (up to 1800 s)" in text
    assert text.count("waiting (up to") == 1 and "no healthy device left" not in text
    for name in ("model.tflite", "model.onnx", "metrics.json", "report.md", "report.html", "preview.png",
                 "previews.png", "sustained.png"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("si_rmse", "rmse", "log10", "rel", "latency_ms", "final_score", "arch"):
        assert key in metrics
    assert metrics["final_score"] == pytest.approx(2 ** (-10 * metrics["si_rmse"]) / (metrics["latency_ms"] / 1000))
    assert metrics["latency_cached"] is False  # the shipped file is timed anew, not given the search's figure
    assert metrics["latency"]["repeats"] == 3  # the shipped local profile: best of 3 bursts
    # Timed under sustained load too (the burst figure stays the Final Score's), with the device it ran on.
    loaded = metrics["sustained"]
    assert loaded["seconds"] == 1 and loaded["invokes"] > 0 and loaded["device"] == metrics["device"]
    assert all(len(sample) == 4 for sample in loaded["samples"]) and "sustained" not in metrics["latency"]
    assert "final model under load: 1 s of sustained load" in text
    assert "Under sustained load: 1 s of sustained load" in (out / "report.md").read_text()
    assert metrics["max_si_rmse"] == FLOOR and metrics["meets_max_si_rmse"] is (metrics["si_rmse"] <= FLOOR)
    assert "Final Score" in (out / "report.md").read_text()
    assert f"accuracy floor, si-RMSE ≤ {FLOOR:g}: met" in (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    assert "Parity checks" in html and f"search trial {metrics['trial']}" in html
    images = re.findall(r'<img[^>]* src="([^"]+)"', html)
    assert "previews.png" in images and "sustained.png" in images and "On the device" in html
    for name in re.findall(r'(?:src|href)="([^"#]+)"', html):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert metrics["search_budget"]["name"] == "smoke" and metrics["seed"] >= 0
    kept = list((work / "results" / "cache" / "final").glob(f"e2e-trial{metrics['trial']}-smoke-seed*"))
    assert len(kept) == 1 and (kept[0] / "model.pt").is_file() and (kept[0] / "trained.json").is_file()
    again = nas(*args, cwd=work)
    assert "reusing the network trained earlier" in again.stderr + again.stdout
    assert json.loads((out / "metrics.json").read_text())["train_steps"] == metrics["train_steps"]


def test_bad_inputs_fail_before_work(tmp_path):
    missing = nas("run", "--data", tmp_path / "nope", "--results", tmp_path / "r", cwd=tmp_path, check=False)
    assert missing.returncode != 0 and "does not exist" in missing.stderr
    assert not (tmp_path / "r" / "nas.db").exists()
    bad_space = tmp_path / "space.yaml"
    bad_space.write_text("params: {backbone: {choices: [resnet_imaginary]}}\n")
    proc = nas("run", "--space", bad_space, "--results", tmp_path / "r", cwd=tmp_path, check=False)
    assert proc.returncode != 0 and str(bad_space) in proc.stderr and "resnet_imaginary" in proc.stderr
    bad_config = tmp_path / "c.yaml"
    bad_config.write_text("trials: many\n")
    proc = nas("run", "--config", bad_config, cwd=tmp_path, check=False)
    assert proc.returncode != 0 and str(bad_config) in proc.stderr and "trials" in proc.stderr
    proc = nas("data", "check", tmp_path / "nope", cwd=tmp_path, check=False)
    assert proc.returncode == 1 and "does not exist" in proc.stdout


@pytest.mark.slow
def test_report_writes_table_plot_and_summary(search):
    work, _, _ = search
    out = work / "report"
    nas("report", "--study", "e2e", "--results", work / "results", "--out", out, cwd=work)
    rows = (out / "trials.csv").read_text().splitlines()
    assert rows[0].startswith("number,state,final_score") and len(rows) == 3
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trials"] == 2 and summary["pareto_front_trials"]
    assert (out / "pareto.png").stat().st_size > 5000
    html = (out / "report.html").read_text()
    images = re.findall(r'<img[^>]* src="([^"]+)"', html)
    assert "pareto.png" in images and any(name.startswith("preview-trial-") for name in images)
    assert all((out / name).is_file() for name in images)  # relative links to files beside the page


@pytest.mark.slow
def test_dashboard_serves_the_study_and_its_artifacts(search):
    import socket
    import time
    import urllib.request

    work, _, _ = search
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([NAS, "dashboard", "--results", work / "results", "--port", str(port)], cwd=work,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        body = None
        for _ in range(60):
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2).read()
                break
            except OSError:
                time.sleep(0.5)
        assert body is not None, "dashboard did not answer"
        (summary,) = json.loads(body)["study_summaries"]
        assert summary["study_name"] == "e2e"
        study_id = summary["study_id"]
        detail = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{study_id}?after=0",
                                                   timeout=10).read())
        trial = next(t for t in detail["trials"] if t["artifacts"])
        preview = next(a for a in trial["artifacts"] if a["filename"] == "preview.png")
        image = urllib.request.urlopen(f"http://127.0.0.1:{port}/artifacts/{study_id}/{trial['trial_id']}/"
                                       f"{preview['artifact_id']}", timeout=10).read()
        assert image.startswith(b"\x89PNG")
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.mark.slow
def test_dashboard_in_a_browser_shows_the_finished_smoke_study(search, browser, tmp_path):
    """Headless Chromium on `nas dashboard` serving the study `nas run` just trained: note and a preview."""
    from helpers.browser import (
        loaded_preview,
        running_dashboard,
        screenshot_on_failure,
        shown_note,
        study_id,
    )

    work, _, _ = search
    with running_dashboard(work / "results", tmp_path) as base, \
            screenshot_on_failure(browser, tmp_path / "dashboard-failure.png"):
        sid = study_id(base, "e2e")
        assert "nas finalize --study e2e" in shown_note(browser, base, sid)
        preview = loaded_preview(browser, base, sid)
        assert browser.execute_script("return arguments[0].naturalWidth", preview) > 0


DRIFT_MARGIN = 1e-6  # int8 trials over it name their worst layer: with a margin this small, nearly every one does


@pytest.fixture(scope="module")
def pareto_search(tmp_path_factory):
    """A two-objective study of int8 candidates: no pruning, no screen, every trial complete."""
    import yaml

    work = tmp_path_factory.mktemp("pareto")
    space = yaml.safe_load((REPO / "search_spaces" / "smoke.yaml").read_text())
    space["params"]["precision"] = {"choices": ["int8"]}
    (work / "space.yaml").write_text(yaml.safe_dump(space, sort_keys=False))
    (work / "config.yaml").write_text(
        f"space: {work / 'space.yaml'}\nbudget: smoke\ntrials: 2\nstudy: front\nobjective: pareto\n"
        "synth_train: 10\nsynth_val: 2\nsynth_test: 1\ncalibration_images: 4\n"
        f"int8_drift_margin: {DRIFT_MARGIN}\n")
    proc = nas("run", "--config", work / "config.yaml", "--results", work / "results", cwd=work)
    return work, proc


@pytest.mark.slow
def test_pareto_study_of_int8_models_runs_to_completion(pareto_search):
    work, proc = pareto_search
    assert "pruning is off for --objective pareto" in proc.stderr
    study = optuna.load_study(study_name="front", storage=f"sqlite:///{work / 'results' / 'nas.db'}")
    assert study.metric_names == ["si_rmse", "latency_ms"] and len(study.directions) == 2
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    for t in study.trials:
        a = t.user_attrs
        assert t.values == [a["si_rmse"], a["latency_ms"]] and not t.intermediate_values
        assert a["precision"] == "int8" and a["arch"]["precision"] == "int8"
        # the quantized model is what is scored; the float32 twin of the same conversion is recorded beside it
        assert a["quantization_si_rmse_delta"] == pytest.approx(a["si_rmse"] - a["si_rmse_fp32"])
        assert a["latency"]["input_dtype"] == "float32" and a["latency"]["output_dtype"] == "float32"
        # over the drift margin, the trial names the layer where the int8 error grows most; within it, nothing
        worst = a.get("int8_worst_layer")
        if a["quantization_si_rmse_delta"] > DRIFT_MARGIN:
            assert worst["layer"] and worst["op"] and worst["rel_rmse"] >= 0, a
            assert f"the error grows most at {worst['layer']}" in proc.stderr
        else:
            assert worst is None
    assert "best trials" in proc.stdout


@pytest.mark.slow
def test_finalize_picks_from_the_pareto_front_and_ships_its_precision(pareto_search):
    work, _ = pareto_search
    out = work / "final"
    proc = nas("finalize", "--study", "front", "--results", work / "results", "--budget", "smoke",
               "--storage", f"sqlite:///{work / 'results' / 'nas.db'}", "--out", out, "--sustained-s", "1", cwd=work)
    metrics = json.loads((out / "metrics.json").read_text())
    study = optuna.load_study(study_name="front", storage=f"sqlite:///{work / 'results' / 'nas.db'}")
    front = [t for t in study.best_trials]
    best = max(front, key=lambda t: t.user_attrs["final_score"])
    assert metrics["trial"] == best.number and metrics["precision"] == "int8"
    assert (out / "model.tflite").is_file() and (out / "model.pt").is_file()
    # Over the drift margin (0.01 here: finalize runs without the search's config), the loss is located: the
    # worst layers and the si-RMSE by calibration-set size, printed, in metrics.json and on the page.
    if metrics["si_rmse"] - metrics["si_rmse_fp32"] > 0.01:
        drift = metrics["int8_drift"]
        assert drift["worst"] and drift["calibration"] and drift["margin"] == 0.01
        assert "layers where the error grows most" in proc.stderr + proc.stdout
        assert "int8 accuracy loss" in (out / "report.html").read_text()
    else:
        assert "int8_drift" not in metrics
