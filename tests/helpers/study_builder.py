"""Studies for the report and dashboard tests, built without training anything.

Trials are added with `optuna.trial.create_trial` and carry the user attributes a real trial records
(`nas.trial.record.TrialRecord`); complete ones get a real preview PNG in the artifact store, uploaded
the way `nas.trial.objective` uploads it. The study itself is opened through `nas.trial.study.open_study` and
gets its note through `nas.trial.study_note`, as `nas run` does; each trial gets its note through
`nas.trial.trial_note`, as `nas.trial.objective` writes it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import optuna
from optuna.artifacts import upload_artifact
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState
from optuna_dashboard import save_note
from PIL import Image

from nas.arch import Arch
from nas.config import RunConfig, load_config
from nas.hardware.profile import load_hardware
from nas.metrics import final_score
from nas.presets import PRESETS
from nas.space import load_space
from nas.trial.record import record_floor
from nas.trial.study import artifact_store, open_storage, open_study
from nas.trial.study_note import write_study_note
from nas.trial.trial_note import preview_url, trial_note

BACKBONES = ("tf_mobilenetv3_small_minimal_100", "mobilenetv3_large_100", "efficientnet_b1", "mobilenetv1_100")
DISTRIBUTIONS = {
    "backbone": CategoricalDistribution(BACKBONES),
    "input_scale": CategoricalDistribution(("1", "0.5", "128x160")),
    "precision": CategoricalDistribution(("fp32", "int8")),
    "distill_lambda": FloatDistribution(0.0, 1.0),
}


@dataclass(frozen=True)
class FakeTrial:
    """One trial to add: complete when it has figures, otherwise failed or pruned with a reason."""

    arch: Arch
    state: TrialState = TrialState.COMPLETE
    si_rmse: float | None = None
    latency_ms: float | None = None
    preset: str | None = None
    fail_reason: str | None = None
    pruned_before_training: bool = False
    screened_by: str | None = None  # "compute_cap" | "latency_bound", for a trial screened before training
    distill_lambda: float = 0.5
    device: str = "local-cpu"
    measure_start: str | None = None  # ISO, UTC: the measurement record (`latency`) with a fingerprint, if given


def make_config(results: Path, study: str = "demo", objective: str = "score",
                max_si_rmse: float | None = None) -> RunConfig:
    return load_config(None, results=results, study=study, objective=objective, max_si_rmse=max_si_rmse)


def _preview(path: Path, shade: int) -> Path:
    """A small input | ground truth | prediction strip, as `nas.trial.evaluate.write_preview` draws them."""
    image = Image.new("RGB", (96, 24))
    for i, colour in enumerate(((200, 120, 40), (shade, shade, 255 - shade), (255 - shade, shade, shade))):
        image.paste(colour, (32 * i, 0, 32 * (i + 1), 24))
    image.save(path)
    return path


def _attrs(fake: FakeTrial, minutes: int) -> dict:
    arch = fake.arch
    attrs: dict = {"arch": arch.to_dict(), "arch_id": arch.arch_id, "precision": arch.precision,
                   "params": 250_000 + 90_000 * BACKBONES.index(arch.backbone),
                   "macs": 180_000_000 + 600_000_000 * BACKBONES.index(arch.backbone)}
    if fake.preset:
        attrs["preset"] = fake.preset
    if fake.state == TrialState.COMPLETE:
        attrs.update(si_rmse=fake.si_rmse, rmse=3 * fake.si_rmse, log10=fake.si_rmse / 4, rel=fake.si_rmse / 2,
                     latency_ms=fake.latency_ms, latency_p90_ms=fake.latency_ms * 1.08,
                     latency_std_ms=fake.latency_ms * 0.03, device=fake.device, threads=4,
                     tflite_bytes=1_200_000, final_score=final_score(fake.si_rmse, fake.latency_ms / 1000),
                     stage_seconds={"train": 95.0 + minutes, "export": 21.5, "evaluate": 3.2, "measure": 7.9},
                     parity={"tflite_vs_onnx": {"max_abs_err_m": 2e-5}})
        if fake.measure_start:
            attrs.update(measure_start=fake.measure_start, latency={
                "device": fake.device, "median_ms": fake.latency_ms, "measure_start": fake.measure_start,
                "fingerprint": {"cpu": "Cortex-A72", "kernel": "6.6.31", "runtime": "ai_edge_litert",
                                "runtime_version": "2.3.0", "cpu_governor": "performance", "temperature_c": 51.5}})
    else:
        attrs["fail_reason"] = fake.fail_reason
        if fake.pruned_before_training:
            attrs["pruned_before_training"] = True
            if fake.screened_by:
                attrs["screened_by"] = fake.screened_by
        elif fake.state == TrialState.PRUNED:
            attrs["stage_seconds"] = {"train": 40.0}
    return attrs


def _note(study: optuna.Study, frozen: optuna.trial.FrozenTrial, outcome: str) -> None:
    """The trial's dashboard note, as `nas.trial.objective` writes it when a trial ends."""
    trial = optuna.Trial(study, frozen._trial_id)
    save_note(trial, trial_note(trial, outcome, preview_url(trial)))


def build_study(config: RunConfig, fakes: list[FakeTrial], model: Path | None = None) -> optuna.Study:
    """Open the study as `nas run` does (metric names, note), then add `fakes` with previews, started 3 minutes apart.

    `model`: a `.tflite` uploaded as every complete trial's `model.tflite`, as `nas run` uploads them.
    """
    study = open_study(config)
    write_study_note(study, config, load_space(config.space), load_hardware(config.hardware))
    storage = open_storage(config.storage_url, heartbeat=False)
    store = artifact_store(config)
    pareto = config.objective == "pareto"
    started = datetime.now() - timedelta(minutes=3 * len(fakes) + 3)
    for i, fake in enumerate(fakes):
        attrs = _attrs(fake, 3 * i)
        complete = fake.state == TrialState.COMPLETE
        # A complete trial is added running, given its preview, then told its values, as in `nas run`:
        # Optuna attaches artifacts to unfinished trials only.
        trial = optuna.trial.create_trial(
            state=TrialState.RUNNING if complete else fake.state, user_attrs=attrs, distributions=DISTRIBUTIONS,
            params={"backbone": fake.arch.backbone, "input_scale": fake.arch.input_scale,
                    "precision": fake.arch.precision, "distill_lambda": fake.distill_lambda})
        trial.datetime_start = started + timedelta(minutes=3 * i)
        if complete:  # as `nas.trial.objective` judges a trial against the floor
            record_floor(trial, config.max_si_rmse, fake.si_rmse)
        if not complete:
            trial.datetime_complete = trial.datetime_start + timedelta(minutes=2, seconds=30)
        study.add_trial(trial)
        if complete:
            frozen = study.get_trials(deepcopy=False)[-1]
            folder = config.results / "previews" / str(i)
            folder.mkdir(parents=True, exist_ok=True)
            png = _preview(folder / "preview.png", 40 + 20 * i)  # the artifact's name is the file's
            upload_artifact(artifact_store=store, file_path=str(png), study_or_trial=frozen, storage=storage)
            if model is not None:
                copy = folder / "model.tflite"
                copy.write_bytes(model.read_bytes())
                upload_artifact(artifact_store=store, file_path=str(copy), study_or_trial=frozen, storage=storage)
            _note(study, frozen, "complete")
            study.tell(frozen.number, [fake.si_rmse, fake.latency_ms] if pareto else attrs["final_score"])
        else:
            outcome = {TrialState.FAIL: "failed"}.get(fake.state, "pruned before training"
                                                       if fake.pruned_before_training else "pruned")
            _note(study, study.get_trials(deepcopy=False)[-1], outcome)
    return study


def preset(name: str, precision: str = "fp32") -> Arch:
    return dataclasses.replace(PRESETS[name], precision=precision)


def searched(backbone: str, scale: str = "0.5", precision: str = "fp32") -> Arch:
    return dataclasses.replace(PRESETS["tencent_gylab"], backbone=backbone, input_scale=scale, precision=precision)


def demo_trials() -> list[FakeTrial]:
    """Three seed presets, four searched trials, one failure, two pruned while training, one screened."""
    return [
        FakeTrial(preset("litedepth"), si_rmse=0.31, latency_ms=38.0, preset="litedepth"),
        FakeTrial(preset("litedepth", "int8"), si_rmse=0.34, latency_ms=29.0, preset="litedepth-int8",
                  distill_lambda=0.2),
        FakeTrial(preset("fastdepth"), si_rmse=0.27, latency_ms=160.0, preset="fastdepth", distill_lambda=0.8),
        FakeTrial(searched("mobilenetv3_large_100"), si_rmse=0.26, latency_ms=61.0, distill_lambda=0.6),
        FakeTrial(searched("tf_mobilenetv3_small_minimal_100", "1"), si_rmse=0.29, latency_ms=24.0,
                  distill_lambda=0.4),
        FakeTrial(searched("efficientnet_b1", precision="int8"), si_rmse=0.25, latency_ms=140.0, distill_lambda=0.9),
        FakeTrial(searched("mobilenetv3_large_100", "128x160", "int8"), si_rmse=0.30, latency_ms=33.0,
                  distill_lambda=0.1),
        FakeTrial(searched("mobilenetv1_100"), TrialState.FAIL,
                  fail_reason="ExportError: onnx2tf failed on Resize\nTraceback (most recent call last): ..."),
        FakeTrial(searched("efficientnet_b1", "1"), TrialState.PRUNED,
                  fail_reason="pruned at step 50: estimated score 0.912 (validation si-RMSE 0.3120, "
                              "predicted latency 301.0 ms)"),
        FakeTrial(searched("mobilenetv1_100", "1"), TrialState.PRUNED,
                  fail_reason="pruned at step 100: estimated score 0.455 (validation si-RMSE 0.3501, "
                              "predicted latency 512.4 ms)"),
        FakeTrial(searched("efficientnet_b1", "1", "int8"), TrialState.PRUNED, pruned_before_training=True,
                  screened_by="latency_bound",
                  fail_reason="latency bound: predicted latency 420.0 ms (lower bound 390.2 ms); even at si-RMSE "
                              "0.220 the score cannot exceed 0.520 < best 5.420 (trial 4)"),
    ]
