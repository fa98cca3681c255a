"""The trial record: every user attribute a trial carries, who writes it, how it is read, and the study queries.

A trial's figures live in Optuna's user attributes (a Pareto study has no single value, so `final_score`,
`si_rmse` and `latency_ms` are kept there for every complete trial). This module is their one owner: `KEYS`
names each attribute and its type, the `record_*` functions write them, the readers below read them, and
`ranked_trials`, `best_feasible`, `best_preset`, `front` and `most_accurate` answer "which trial" with one
rule, Final Score descending and then trial number ascending. The study's accuracy floor (`FLOOR_ATTR`) and
what counts towards `--trials` (`is_trained`) are trial-level rules, so they are here too.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from nas.arch import Arch
from nas.errors import ConfigError
from nas.infra.files import sha256_file
from nas.infra.workers import worker_gone

if TYPE_CHECKING:
    from nas.hardware.agreement import FlaggedWindow
    from nas.trial.pipeline import Deployed
    from nas.trial.screen import LatencyEstimate

Trial = optuna.Trial | FrozenTrial

# Every user attribute a trial carries, and its type. Written before training: worker, preset (enqueued seed
# presets), arch, arch_id, precision, params, macs, activations, encoder_weights, the latency estimate and the
# screen's verdict; while training: train_val_si_rmse, stage_seconds; once deployed: `TrialRecord`'s fields.
KEYS: dict[str, type | tuple[type, ...]] = {
    "worker": str,  # the worker running the trial (`nas.infra.db.worker_id`), also the meter's lease holder
    "preset": str,  # the seed preset's name, for trials enqueued from `nas.presets`
    "arch": dict,  # `Arch.to_dict()`
    "arch_id": str,
    "precision": str,  # "fp32" | "int8"
    "params": int,
    "macs": int,  # per frame at deployment resolution
    "activations": int,
    "encoder_weights": dict,  # `WeightSource.record()`: the weights the encoder started from
    "latency_prediction_ms": float,  # the predictor's figure, kept to judge the predictor
    "latency_upper_ms": float,  # the prediction's upper bound, when it passed the screen even there
    "latency_estimate_ms": float,  # the latency the screen and the pruner used
    "latency_estimate_source": str,  # "measured" | "predicted"
    "pruned_before_training": bool,
    "screened_by": str,  # "compute_cap" | "latency_bound"
    "fail_reason": str,
    "distill": dict,  # the teacher's record and the trial's lambda
    "train_val_si_rmse": float,  # the last validation si-RMSE while training
    "budget": dict,  # `Budget.model_dump()`: the training recipe the trial got (`nas finalize` compares its own)
    "stage_seconds": dict,  # stage -> seconds
    "max_si_rmse": float,  # the accuracy floor the trial was judged by
    # `TrialRecord`: a deployed model's figures
    "si_rmse": float, "rmse": float, "log10": float, "rel": float,
    "latency_ms": float, "latency_p90_ms": float, "latency_std_ms": float, "device": str, "threads": int,
    "latency_cached": bool, "latency_contended": bool, "tflite_sha256": str, "tflite_bytes": int,
    "measure_start": str, "measure_end": str, "throttled": str, "parity": dict, "final_score": float,
    "latency": dict, "si_rmse_fp32": float, "quantization_si_rmse_delta": float,
    "int8_worst_layer": dict,  # int8 over `int8_drift_margin`: layer, op, shape, rel_rmse, growth
    # `sustained_top`: the runner's sustained-load run of a trial that entered the study's top N (its device and
    # the seconds it cost added); shown, never part of the Final Score
    "sustained": dict,
}

SCORED_KEYS = ("final_score", "si_rmse", "latency_ms")  # what a complete trial's figures are drawn from
FLOOR_ATTR = "max_si_rmse"  # the study's user attribute: its accuracy floor, or None
BUDGET_ATTR = "budget"  # the study's user attribute: the training budget its trials were searched at


@dataclass
class TrialRecord:
    """A deployed model's figures as one record: a trial's user attributes, and `nas finalize`'s metrics.json."""

    arch: dict[str, Any]
    arch_id: str
    precision: str
    params: int
    macs: int
    activations: int
    si_rmse: float
    rmse: float
    log10: float
    rel: float
    latency_ms: float
    latency_p90_ms: float
    latency_std_ms: float
    device: str
    threads: int
    latency_cached: bool
    tflite_sha256: str
    tflite_bytes: int
    measure_start: str
    measure_end: str
    throttled: str | None
    parity: dict[str, Any]
    final_score: float
    stage_seconds: dict[str, float]
    latency: dict[str, Any]
    si_rmse_fp32: float | None = None
    quantization_si_rmse_delta: float | None = None
    encoder_weights: dict[str, Any] | None = None  # WeightSource.record(): the weights the encoder started from
    latency_contended: bool = False  # timed while other processes kept the device busy (hardware/README.md)
    int8_worst_layer: dict[str, Any] | None = None  # int8 models that lost more than the drift margin

    @classmethod
    def build(cls, arch: Arch, figures: dict[str, int], deployed: Deployed, stage_seconds: dict[str, float],
              encoder_weights: dict[str, Any] | None = None) -> TrialRecord:
        lat = deployed.latency
        fp32 = deployed.fp32_metrics
        return cls(
            arch=arch.to_dict(), arch_id=arch.arch_id, precision=arch.precision, params=figures["params"],
            macs=figures["macs"], activations=figures["activations"],
            **{k: deployed.metrics[k] for k in ("si_rmse", "rmse", "log10", "rel")},
            latency_ms=lat.median_ms, latency_p90_ms=lat.p90_ms, latency_std_ms=lat.std_ms, device=lat.device,
            threads=lat.threads, latency_cached=lat.cached,
            tflite_sha256=sha256_file(deployed.tflite_path), tflite_bytes=deployed.tflite_path.stat().st_size,
            measure_start=lat.measure_start, measure_end=lat.measure_end, throttled=lat.throttled,
            parity=deployed.parity, final_score=deployed.score,
            stage_seconds={k: round(v, 3) for k, v in stage_seconds.items()},
            latency={k: v for k, v in lat.as_record().items() if k != "sustained"},  # kept apart: `sustained`
            si_rmse_fp32=None if fp32 is None else fp32["si_rmse"],
            quantization_si_rmse_delta=None if fp32 is None else deployed.metrics["si_rmse"] - fp32["si_rmse"],
            encoder_weights=encoder_weights, latency_contended=lat.contended,
            int8_worst_layer=deployed.int8_worst_layer)

    def as_attrs(self) -> dict[str, Any]:
        """JSON-safe user attributes; fields that do not apply (None) are left out."""
        return {k: v for k, v in asdict(self).items() if v is not None}


# --- writers ----------------------------------------------------------------------------------------------

def _set(trial: optuna.Trial, **values: Any) -> None:
    for key, value in values.items():
        if key not in KEYS:
            raise KeyError(f"{key!r} is not a trial record key (nas.trial.record.KEYS)")
        trial.set_user_attr(key, value)


def record_worker(trial: optuna.Trial, worker: str) -> None:
    _set(trial, worker=worker)


def preset_record(name: str) -> dict[str, Any]:
    """The record a seed preset is enqueued with (`study.enqueue_trial(..., user_attrs=...)`)."""
    return {"preset": name}


def record_arch(trial: optuna.Trial, arch: Arch, figures: dict[str, int]) -> None:
    """The sampled architecture and its size (params, macs, activations)."""
    _set(trial, arch=arch.to_dict(), arch_id=arch.arch_id, precision=arch.precision, **figures)


def record_weights(trial: optuna.Trial, encoder_weights: dict[str, Any]) -> None:
    _set(trial, encoder_weights=encoder_weights)


def record_failure(trial: optuna.Trial, reason: str) -> None:
    """Why the trial was failed or pruned."""
    _set(trial, fail_reason=reason)


def record_estimate(trial: optuna.Trial, estimate: LatencyEstimate) -> None:
    """The latency the screen and the pruner go by."""
    _set(trial, latency_estimate_ms=estimate.ms, latency_estimate_source=estimate.source)


def record_prediction(trial: optuna.Trial, estimate: LatencyEstimate) -> None:
    """The predictor's figure (kept to judge the predictor)."""
    _set(trial, latency_prediction_ms=estimate.ms)


def record_upper_bound(trial: optuna.Trial, upper_ms: float) -> None:
    _set(trial, latency_upper_ms=upper_ms)


def record_screened(trial: optuna.Trial, by: str, reason: str, estimate: LatencyEstimate | None = None) -> None:
    """Pruned before training by `by` ("compute_cap" | "latency_bound"), with the estimate it went by."""
    if estimate is not None:
        record_estimate(trial, estimate)
    _set(trial, pruned_before_training=True, screened_by=by, fail_reason=reason)


def record_distill(trial: optuna.Trial, distill: dict[str, Any]) -> None:
    _set(trial, distill=distill)


def record_budget(trial: optuna.Trial, budget: dict[str, Any]) -> None:
    """The training budget the trial trains with (`Budget.model_dump()`)."""
    _set(trial, budget=budget)


def record_validation(trial: optuna.Trial, val_si_rmse: float) -> None:
    _set(trial, train_val_si_rmse=val_si_rmse)


def record_stage_seconds(trial: optuna.Trial, stage_seconds: dict[str, float]) -> None:
    _set(trial, stage_seconds=stage_seconds)


def record_deployed(trial: optuna.Trial, record: TrialRecord) -> None:
    """The deployed model's figures (once the files they point to are stored)."""
    _set(trial, **record.as_attrs())


def record_sustained(trial: optuna.Trial, run: dict[str, Any]) -> None:
    """The trial's model timed under sustained load (the runner's `sustained` object), for `sustained_top`."""
    _set(trial, sustained=run)


def rank_among(study: optuna.Study, score: float, number: int) -> int:
    """Where a trial with Final Score `score` (not complete yet) ranks among the study's complete trials that meet
    the accuracy floor, by the one rule (score descending, then trial number): 1 is the best."""
    return 1 + sum(1 for t in ranked_trials(study) if (-score_of(t), t.number) < (-score, number))


def record_floor(trial: optuna.Trial, floor: float | None, si_rmse: float) -> None:
    """Judge the trial against the study's accuracy floor: feasible at ≤ 0, by Optuna's rule, which its best
    trial(s) and TPE honour. No floor: no constraint."""
    if floor is None:
        return
    _set(trial, max_si_rmse=floor)
    trial.set_constraint("si_rmse", si_rmse - floor)


def fail_orphaned_trials(study: optuna.Study, worker: str, reason: str) -> list[int]:
    """Fail the trials `worker` left running (the database link broke under them), with `reason`; their numbers."""
    orphans = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) if worker_of(t) == worker]
    for trial in orphans:  # Optuna has no public setter for a trial it did not hand out; fail_stale_trials does this
        study._storage.set_trial_user_attr(trial._trial_id, "fail_reason", reason)
        study.tell(trial.number, state=TrialState.FAIL)
    return [t.number for t in orphans]


def fail_trials_of_dead_workers(study: optuna.Study) -> list[FrozenTrial]:
    """Fail the running trials whose worker ran on this machine and no longer runs (killed), with the reason,
    and retry each as a stale heartbeat would (the storage's `RetryHeartbeatStaleTrialCallback`: enqueued
    once, its `failed_trial` system attribute naming the dead one); the trials failed here.

    Optuna's heartbeat would fail them too, but only `grace_s` after the kill: a prompt rerun on the same
    machine would count them as running elsewhere meanwhile. A trial of another machine's worker is left to
    the heartbeat.
    """
    storage, failed = study._storage, []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = worker_of(trial)
        started = trial.datetime_start.timestamp() if trial.datetime_start is not None else None
        if not worker_gone(worker, started):
            continue
        try:  # the reason first: a finished trial takes no attributes; another rerun may fail it first
            storage.set_trial_user_attr(trial._trial_id, "fail_reason", f"its worker {worker} is no longer running")
            if not storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
        dead = copy.deepcopy(storage.get_trial(trial._trial_id))
        retry = getattr(storage, "get_heartbeat_stale_trial_callback", lambda: None)()
        if retry is not None:
            retry(study, dead)
        failed.append(dead)
    return failed


# --- readers ----------------------------------------------------------------------------------------------

def attrs(trial: Trial) -> Mapping[str, Any]:
    """The whole record, read-only (a table row shows many keys)."""
    return MappingProxyType(trial.user_attrs)


def score_of(trial: Trial) -> float | None:
    return trial.user_attrs.get("final_score")


def si_rmse_of(trial: Trial) -> float | None:
    return trial.user_attrs.get("si_rmse")


def latency_of(trial: Trial) -> float | None:
    """The deployed model's median latency (ms)."""
    return trial.user_attrs.get("latency_ms")


def arch_of(trial: Trial) -> dict[str, Any]:
    """The recorded architecture as `Arch.to_dict()` gave it; {} when none was recorded."""
    return trial.user_attrs.get("arch", {})


def has_arch(trial: Trial) -> bool:
    return "arch" in trial.user_attrs


def arch_id_of(trial: Trial) -> str | None:
    return trial.user_attrs.get("arch_id")


def backbone_of(trial: Trial, missing: str = "?") -> str:
    return arch_of(trial).get("backbone", missing)


def precision_of(trial: Trial) -> str:
    return trial.user_attrs.get("precision", arch_of(trial).get("precision", "fp32"))


def preset_of(trial: Trial) -> str | None:
    return trial.user_attrs.get("preset")


def worker_of(trial: Trial) -> str | None:
    return trial.user_attrs.get("worker")


def fail_reason_of(trial: Trial, missing: str | None = None) -> str | None:
    return trial.user_attrs.get("fail_reason", missing)


def screened_before_training(trial: Trial) -> bool:
    return bool(trial.user_attrs.get("pruned_before_training"))


def screened_by_of(trial: Trial) -> str | None:
    """What pruned the trial before training ("compute_cap" | "latency_bound"), or None."""
    return trial.user_attrs.get("screened_by")


def stage_seconds_of(trial: Trial) -> dict[str, float]:
    return trial.user_attrs.get("stage_seconds") or {}


def budget_of(trial: Trial) -> dict[str, Any] | None:
    """The training budget the trial got (`Budget.model_dump()`); None for trials recorded before it was kept."""
    return trial.user_attrs.get("budget")


def encoder_weights_of(trial: Trial) -> dict[str, Any]:
    """The encoder weights the trial started from (`WeightSource.record()`); {} when not recorded."""
    return trial.user_attrs.get("encoder_weights") or {}


def latency_flag_of(trial: Trial, windows: Iterable[FlaggedWindow]) -> str | None:
    """Why the trial's latency figure is suspect: the reason of the flagged window (`nas.hardware.agreement`)
    its device and `measure_start` fall in, or None. A finished trial's attributes cannot change, so the flag
    is read against the study's windows, not stored on the trial."""
    a = attrs(trial)
    latency = a.get("latency") or {}
    name = latency.get("device") or a.get("device")
    when = latency.get("measure_start") or a.get("measure_start")
    return next((w.reason for w in windows if w.covers(name, when)), None)


def latency_fingerprint_of(trial: Trial) -> dict[str, Any]:
    """The device's fingerprint when it timed the trial (CPU, kernel, runtime, governor, temperature); empty in
    records taken before measurements carried one."""
    return dict((attrs(trial).get("latency") or {}).get("fingerprint") or {})


def measured_latency_ms(attrs: Mapping[str, Any]) -> float | None:
    """A trial's measured latency, from its record (`attrs(trial)`): deployed, or timed untrained before a screen
    or pruner stopped it; None when it has only a prediction or none."""
    if "latency_ms" in attrs:
        return attrs["latency_ms"]
    if attrs.get("latency_estimate_source") == "measured" and "latency_estimate_ms" in attrs:
        return attrs["latency_estimate_ms"]
    return None


# --- the accuracy floor and what counts ---------------------------------------------------------------------

def keep_accuracy_floor(study: optuna.Study, floor: float | None, created: bool) -> None:
    """Record the floor of a new study; refuse a resumed one's change (ConfigError).

    Optuna fixes a trial's feasibility when it completes (`Trial.set_constraint`), so a floor changed on
    resume would judge the study's trials by two rules at once; a new floor is a new study.
    """
    if created:
        study.set_user_attr(FLOOR_ATTR, floor)
        return
    recorded = study_floor(study)
    if recorded != floor:
        def shown(value: float | None) -> str:
            return "none" if value is None else f"{value:g}"
        raise ConfigError(None, f"study {study.study_name!r} was created with max_si_rmse {shown(recorded)}, this run "
                                f"asks for {shown(floor)}: a study keeps the floor its trials were judged by; give "
                                "the new floor a new --study name")


def record_study_budget(study: optuna.Study, budget: str) -> None:
    """The budget the study's trials train at (the last run's: a resumed run may change it)."""
    if study.user_attrs.get(BUDGET_ATTR) != budget:
        study.set_user_attr(BUDGET_ATTR, budget)


def study_budget(study: optuna.Study) -> str | None:
    """The budget the study's trials were trained at, or None for a study that never recorded it."""
    return study.user_attrs.get(BUDGET_ATTR)


def study_floor(study: optuna.Study) -> float | None:
    """The study's accuracy floor (max si-RMSE), or None."""
    return study.user_attrs.get(FLOOR_ATTR)


def is_feasible(trial: FrozenTrial) -> bool:
    """Whether a trial meets its study's constraints, by Optuna's rule (every constraint value ≤ 0); a trial of
    a study without a floor has none and is feasible."""
    return all(value <= 0.0 for value in trial.constraints.values())


# Trials that count towards `--trials`: a failed or interrupted trial is retried by the next run, and a
# candidate screened out before training (it cost seconds) does not use up the budget.
COUNTED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)


def is_trained(trial: FrozenTrial) -> bool:
    """Complete, or pruned while training: a trial that counts towards `--trials`."""
    return trial.state in COUNTED_STATES and not screened_before_training(trial)


def trained_count(study: optuna.Study) -> int:
    """Complete trials and trials pruned while training."""
    return sum(1 for t in study.get_trials(deepcopy=False, states=COUNTED_STATES) if is_trained(t))


# --- which trial: one rule, Final Score descending, then trial number ascending ------------------------------

def by_score(trials: Iterable[FrozenTrial]) -> list[FrozenTrial]:
    """`trials` best Final Score first; ties: lower trial number first."""
    return sorted(trials, key=lambda t: (-score_of(t), t.number))


def _complete(study: optuna.Study) -> list[FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def scored_trials(trials: Iterable[FrozenTrial]) -> list[FrozenTrial]:
    """Complete trials with a Final Score, si-RMSE and latency, best score first (feasible or not)."""
    return by_score(t for t in trials if t.state == TrialState.COMPLETE and all(k in t.user_attrs for k in SCORED_KEYS))


def ranked_trials(study: optuna.Study, feasible_only: bool = True) -> list[FrozenTrial]:
    """Complete trials with a Final Score (a Pareto study's too), best score first; `feasible_only`: those that
    meet the study's accuracy floor."""
    return by_score(t for t in _complete(study) if score_of(t) is not None and (is_feasible(t) or not feasible_only))


def first_feasible(ranked: Iterable[FrozenTrial]) -> FrozenTrial | None:
    """The first of `ranked` (best first) that meets the study's accuracy floor; None when none does."""
    return next((t for t in ranked if is_feasible(t)), None)


def is_pareto(study: optuna.Study) -> bool:
    return len(study.directions) > 1


def front(study: optuna.Study) -> list[FrozenTrial]:
    """A Pareto study's front, Optuna's (feasible trials no other beats on both objectives), best Final Score
    first; [] for a one-objective study."""
    if not is_pareto(study) or not _complete(study):
        return []
    return by_score(t for t in study.best_trials if "final_score" in t.user_attrs)


def contenders(study: optuna.Study) -> list[FrozenTrial]:
    """The trials a best is chosen from, best first: the front's for a Pareto study, else the ranked feasible ones."""
    return front(study) if is_pareto(study) else ranked_trials(study)


def best_feasible(study: optuna.Study) -> FrozenTrial | None:
    """The complete trial with the best Final Score that meets the accuracy floor (for a Pareto study: the
    front's trial with the best Final Score); None when there is none."""
    return next(iter(contenders(study)), None)


def best_preset(study: optuna.Study) -> FrozenTrial | None:
    """The seed preset with the best Final Score among those that meet the accuracy floor."""
    return next((t for t in ranked_trials(study) if preset_of(t)), None)


def best_searched(study: optuna.Study) -> FrozenTrial | None:
    """The searched (not preset) trial with the best Final Score among those that meet the accuracy floor."""
    return next((t for t in ranked_trials(study) if not preset_of(t)), None)


def most_accurate(study: optuna.Study) -> FrozenTrial | None:
    """The complete trial with the lowest si-RMSE (ties: lower trial number first), feasible or not."""
    measured = [t for t in _complete(study) if si_rmse_of(t) is not None]
    return min(measured, key=lambda t: (si_rmse_of(t), t.number), default=None)
