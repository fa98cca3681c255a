"""Trial-level behaviour that needs no export: unbuildable archs are pruned with their reason."""

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import optuna

from nas.config import load_config
from nas.objective import TrialObjective
from nas.space import load_space

NAS = str(Path(sys.executable).parent / "nas")


def test_unbuildable_arch_is_pruned_with_reason(tmp_path):
    space_file = tmp_path / "space.yaml"
    # each choice is valid alone; RFDB with an odd width cannot be built
    space_file.write_text("params:\n  depth: {choices: [4]}\n"
                          "  decoder_channels: {per_stage: true, choices: [15]}\n"
                          "  blocks: {per_stage: true, choices: [rfdb]}\n")
    ctx = SimpleNamespace(config=load_config(None, results=tmp_path), space=load_space(space_file))
    study = optuna.create_study(direction="maximize")
    study.optimize(TrialObjective(ctx, store=None), n_trials=2)
    assert all(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)
    assert "even" in study.trials[0].user_attrs["fail_reason"]


def test_arch_show_json_gives_params_and_macs():
    proc = subprocess.run([NAS, "arch", "show", "litedepth", "--json"], capture_output=True, text=True, check=True)
    info = json.loads(proc.stdout)
    assert info["arch"]["backbone"] == "tf_mobilenetv3_small_minimal_100"
    assert info["params"] > 100_000 and info["macs"] > 1_000_000
    bad = subprocess.run([NAS, "arch", "show", "no_such_preset"], capture_output=True, text=True)
    assert bad.returncode != 0 and "neither a preset" in bad.stderr


def test_arch_export_cli_writes_models_and_parity_report(tmp_path):
    proc = subprocess.run([NAS, "arch", "export", "litedepth", "--out", tmp_path, "--height", "96", "--width", "128"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "model.onnx").is_file() and (tmp_path / "model.tflite").is_file()
    assert "max_abs_err_tflite_vs_onnx_m" in proc.stdout
