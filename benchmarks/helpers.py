"""Helpers more than one benchmark needs: timing a `.tflite` file, building and converting fixed networks,
configuring and re-timing a search arm. Benchmarks import these from here, never from one another, so
each script can change (or be deleted) without breaking the others.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from statistics import median
from typing import Any
from unittest import mock

import optuna
import torch
from optuna.artifacts import FileSystemArtifactStore

from nas.arch import Arch
from nas.config import REPO_ROOT, RunConfig, load_config
from nas.data.synth import render_scene
from nas.export.onnx_export import export_onnx
from nas.export.pipeline import calibration_scenes
from nas.export.tflite_convert import calibration_sample, convert_to_tflite
from nas.hardware.backend import RUNNER_PATH, parse_runner_output, runner_args
from nas.hardware.profile import DeviceProfile, load_hardware
from nas.metrics import final_score
from nas.models import DepthNet
from nas.presets import PRESETS
from nas.report.previews import MODEL_NAME, fetch_artifact

LITEDEPTH = PRESETS["litedepth"]
# A searched network at 48×64 inside with a depth map upsampled by a whole factor (×10): the kind of
# small graph where the fixed costs and the timing noise matter most (the pages name the search it came from).
SEARCHED_GHOSTNET_48X64 = Arch(backbone="ghostnet_100", depth=4, decoder_channels=(96, 48, 8, 8),
                               skips=("none", "concat", "add", "none"), blocks=("conv", "dws5", "conv", "srb"),
                               upsample="nearest", input_scale="0.1", head="sigmoid")


# --- timing ----------------------------------------------------------------------------------------------

def time_once(path: str, threads: int, warmup: int, runs: int) -> dict[str, Any]:
    """One runner invocation on this machine: its JSON (median_ms, dtypes, runtime...).

    A fresh process per figure, as the search's local device does, so process start-up and model load
    are part of what varies between figures.
    """
    argv = [sys.executable, str(RUNNER_PATH), "--model", path, "--threads", str(threads),
            "--warmup", str(warmup), "--runs", str(runs)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    return parse_runner_output("local", "timed run", done.returncode, done.stdout, done.stderr)


def time_as_profiled(path: str, profile: DeviceProfile, sustained_s: float = 0.0) -> dict[str, Any]:
    """One runner invocation with a device profile's setting, exactly as the meter runs it (bursts included);
    `sustained_s` > 0 adds that long of invokes without pause (the runner's `sustained` object)."""
    argv = [sys.executable, str(RUNNER_PATH), *runner_args(profile, path, sustained_s=sustained_s)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600 + sustained_s)
    return parse_runner_output(profile.name, "timed run", done.returncode, done.stdout, done.stderr)


# --- fixed networks ---------------------------------------------------------------------------------------

def untrained_model(arch: Arch) -> torch.nn.Module:
    """The network as `export_arch` exports it: seed 0, random head so the output varies."""
    torch.manual_seed(0)
    model = DepthNet(arch)
    torch.nn.init.normal_(model.head.conv.weight, std=0.05)
    return model.eval()


def convert_variants(builders: dict[str, Callable[[], torch.nn.Module]], workdir: Path
                     ) -> tuple[dict[str, Path], dict[str, float]]:
    """Each variant as a 640×480 `.tflite` under `workdir/<name>/` (int8 where the name says `-int8`,
    without the DCR rewrite where it ends in `-crd`), converted once: the files and conversion seconds.

    A file already there is reused: conversions cost minutes, and benchmarks that time the same graphs
    (latency_floor, latency_repeatability) share a work folder.
    """
    rgb, _ = render_scene(0, 640, 480)
    files: dict[str, Path] = {}
    convert_s: dict[str, float] = {}
    for name, build in builders.items():
        folder = workdir / name
        folder.mkdir(parents=True, exist_ok=True)
        precision = "int8" if "-int8" in name else "fp32"
        files[name] = folder / f"{precision}.tflite"
        if not files[name].exists():
            torch.manual_seed(0)
            # `-crd`: the graph as PyTorch exports pixel shuffle, before `export_onnx` rewrote it to DCR.
            with mock.patch("nas.export.onnx_export.depth_to_space_as_dcr", return_value=0) if name.endswith("-crd") \
                    else contextlib.nullcontext():
                onnx_path = export_onnx(build().eval(), folder / "model.onnx", 480, 640)
            start = time.perf_counter()
            convert_to_tflite(onnx_path, files[name], calibration_sample([rgb]), log_path=folder / "onnx2tf.log",
                              precision=precision,
                              calibration=calibration_scenes(0, 480, 640) if precision == "int8" else None)
            convert_s[name] = round(time.perf_counter() - start, 1)
    return files, convert_s


# --- search arms ------------------------------------------------------------------------------------------

def arm_config(work: Path, name: str, seed: int, budget: str, **overrides) -> RunConfig:
    """One arm: its own study and SQLite file under `work`, sharing data, teacher and latency cache
    (`work/shared`) with the other arms, so arms differ only in what the benchmark varies."""
    overrides.setdefault("baselines", "none")  # a search from scratch unless the arm says otherwise
    return load_config(None, results=work / "shared", storage=f"sqlite:///{(work / name).as_posix()}.db",
                       study=name, budget=budget, seed=seed, teacher=None, **overrides)


def counts_as_arm_trial(trial: optuna.trial.FrozenTrial) -> bool:
    """The arm's own trials and the presets copied into it; not a sampled stand-in copied by mistake."""
    return "copied_from" not in trial.user_attrs or bool(trial.user_attrs.get("preset"))


def retime(work: Path, studies: dict[str, optuna.Study], top: int, rounds: int) -> dict[str, dict]:
    """Each arm's `top` trials and every preset re-timed in `rounds` interleaved rounds; Final Scores recomputed.

    Latencies taken inside an arm carry whatever load the machine had then; timing the files again one
    after another, with the shipped local profile's setting, is what makes arms comparable.
    """
    store = FileSystemArtifactStore(str(work / "shared" / "artifacts"))
    files: dict[str, dict] = {}  # model sha -> what it is and where it lies
    picks: dict[str, list[tuple[optuna.trial.FrozenTrial, str]]] = {}
    scratch = work / "retime"
    scratch.mkdir(parents=True, exist_ok=True)
    (local,) = load_hardware(REPO_ROOT / "hardware" / "local.yaml")  # the search's own timing setting
    for arm, study in studies.items():
        complete = sorted((t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE),
                          key=lambda t: -t.value)
        own = [t for t in complete if "copied_from" not in t.user_attrs]
        copies = [t for t in complete if "copied_from" in t.user_attrs and counts_as_arm_trial(t)]  # presets' files
        chosen = [t for t in complete if t.user_attrs.get("preset")] if arm == "presets" else own[:top] + copies
        for trial in chosen:
            sha = trial.user_attrs["tflite_sha256"]
            if sha not in files:
                path = scratch / f"{sha[:16]}.tflite"
                if not path.exists() and not fetch_artifact(trial, study._storage, store, MODEL_NAME, path):
                    continue
                files[sha] = {"file": str(path), "medians": []}
            picks.setdefault(arm, []).append((trial, sha))
    shas = list(files)
    for round_index in range(rounds if shas else 0):
        for sha in shas[round_index % len(shas):] + shas[:round_index % len(shas)]:
            files[sha]["medians"].append(time_as_profiled(files[sha]["file"], local)["median_ms"])
    result = {}
    for arm, pairs in picks.items():
        rows = []
        for trial, sha in pairs:
            quiet_ms = median(files[sha]["medians"])
            rows.append({"number": trial.number, "preset": trial.user_attrs.get("preset"),
                         "si_rmse": trial.user_attrs["si_rmse"], "search_latency_ms": trial.user_attrs["latency_ms"],
                         "quiet_latency_ms": quiet_ms, "search_score": trial.value,
                         "quiet_score": final_score(trial.user_attrs["si_rmse"], quiet_ms / 1000.0)})
        rows.sort(key=lambda r: -r["quiet_score"])
        result[arm] = {"best_quiet_score": rows[0]["quiet_score"] if rows else None, "trials": rows}
    return result
