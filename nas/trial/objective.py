"""The Optuna objective: one trial = sample, screen on latency, train, deploy, record.

Latency first: a candidate's latency is known (the same graph was timed before) or predicted from
the study's own measurements before it is trained. If even an optimistic si-RMSE at a latency
below the prediction cannot beat the study's best Final Score, the candidate is pruned before any
training, with the figures in its `fail_reason`. Where the prediction leaves that decision open, the
untrained graph is converted and timed first (`time_before_training`). While training, the
intermediate values are the objective's own estimate, the Final Score from the validation si-RMSE
(deployment resolution, the same frames the TFLite model is scored on) and that latency, so Optuna's
pruners compare like with like, in the study's direction.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.artifacts import upload_artifact

from nas.arch import Arch, ArchError
from nas.infra.console import err as console
from nas.infra.db import worker_id
from nas.trial.latency_model import LatencyPoint, LatencyPredictor, arch_figures, best_possible_score
from nas.metrics import final_score
from nas.trial.pipeline import (TrialContext, TrialRecord, deploy, graph_key, initial_network, time_untrained,
                       train_candidate)
from nas.trial.progress import StudyProgress
from nas.infra.signals import Terminated


@dataclass(frozen=True)
class LatencyEstimate:
    """Latency known before training: measured for this graph already, or predicted with bounds."""

    ms: float
    lower_ms: float
    source: str  # "measured" | "predicted"
    upper_ms: float | None = None  # a prediction's upper bound (a measurement needs none)


def latency_points(study: optuna.Study) -> list[LatencyPoint]:
    """The study's measured (graph figures, latency) pairs, one per graph: the predictor's training data.

    Complete trials give their deployed latency; candidates timed untrained and then screened or pruned
    give that measurement (a predicted figure is never fitted on).
    """
    points: dict[str, LatencyPoint] = {}
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    for t in study.get_trials(deepcopy=False, states=states):
        a = t.user_attrs
        ms = measured_latency_ms(a)
        if ms is None or not {"macs", "activations"} <= set(a):
            continue
        points[a.get("arch_id", f"trial {t.number}")] = LatencyPoint(a["macs"], a["activations"], a.get("precision") == "int8", ms)
    return list(points.values())


def measured_latency_ms(attrs: dict) -> float | None:
    """A trial's measured latency: deployed, or timed untrained before a screen or pruner stopped it;
    None when it has only a prediction or none."""
    if "latency_ms" in attrs:
        return attrs["latency_ms"]
    if attrs.get("latency_estimate_source") == "measured" and "latency_estimate_ms" in attrs:
        return attrs["latency_estimate_ms"]
    return None


def estimate_latency(ctx: TrialContext, study: optuna.Study, arch: Arch, figures: dict[str, int]
                     ) -> LatencyEstimate | None:
    if ctx.config.latency_key == "graph":
        known = ctx.meter.cached(graph_key(arch, ctx.config))
        if known is not None:
            return LatencyEstimate(known.median_ms, known.median_ms, "measured")
    predictor = LatencyPredictor.fit(latency_points(study))
    if predictor is None:
        return None
    macs, activations, int8 = figures["macs"], figures["activations"], arch.precision == "int8"
    return LatencyEstimate(predictor.predict_ms(macs, activations, int8),
                           predictor.lower_bound_ms(macs, activations, int8), "predicted",
                           predictor.upper_bound_ms(macs, activations, int8))


def optimistic_si_rmse(ctx: TrialContext, study: optuna.Study) -> float | None:
    """The si-RMSE the screen assumes a candidate could reach (configured, or derived from the study)."""
    cfg = ctx.config
    if cfg.bound_si_rmse is not None:
        return cfg.bound_si_rmse
    seen = [t.user_attrs["si_rmse"] for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            if "si_rmse" in t.user_attrs]
    if ctx.distillation is not None and ctx.distillation.record.get("teacher_val_si_rmse") is not None:
        seen.append(ctx.distillation.record["teacher_val_si_rmse"])
    return max(min(seen) - cfg.bound_margin, 0.0) if seen else None


def compute_cap_reason(space, figures: dict[str, int], preset: str | None) -> str | None:
    """Why a candidate is above the space's compute cap (`max_mmacs`), or None. Presets are never capped:
    a user who enqueues one by name wants its figures."""
    if space.max_mmacs is None or preset is not None or figures["macs"] <= space.max_mmacs * 1e6:
        return None
    where = f" ({space.path})" if space.path is not None else ""
    return (f"compute cap: {figures['macs'] / 1e6:.0f} MMACs per frame > the space's max_mmacs "
            f"{space.max_mmacs:g}{where}")


def screen_reason(ctx: TrialContext, study: optuna.Study, estimate: LatencyEstimate | None) -> str | None:
    """Why this candidate cannot beat the incumbent, or None when it might."""
    cfg = ctx.config
    if estimate is None or not cfg.latency_screen or cfg.objective != "score":
        return None
    try:
        best = study.best_trial
    except ValueError:  # no complete trial yet
        return None
    floor = optimistic_si_rmse(ctx, study)
    if floor is None:
        return None
    bound = best_possible_score(floor, estimate.lower_ms, cfg.score_alpha, cfg.score_c)
    if bound >= best.value:
        return None
    return (f"latency bound: {estimate.source} latency {estimate.ms:.1f} ms (lower bound {estimate.lower_ms:.1f} ms); "
            f"even at si-RMSE {floor:.3f} the score cannot exceed {bound:.3f} < best {best.value:.3f} "
            f"(trial {best.number})")


def timing_can_decide(ctx: TrialContext, study: optuna.Study, estimate: LatencyEstimate | None) -> bool:
    """Whether timing the untrained graph could change what happens to the candidate before training.

    `time_before_training: true` times every new graph. Otherwise (`auto`) a prediction that passes the
    screen even at its upper bound keeps the candidate whatever the device says, so that conversion would
    only delay training: the trained model is timed once, as an untimed search would. Without a prediction
    (fewer than 4 measured graphs) the graph is timed: the pruner has no other figure and the predictor
    learns from it.
    """
    if estimate is None:
        return True
    if estimate.source == "measured":
        return False
    if ctx.config.time_before_training is True:
        return True
    upper = LatencyEstimate(estimate.upper_ms, estimate.upper_ms, estimate.source)
    return screen_reason(ctx, study, upper) is not None


class TrialObjective:
    """The Optuna objective: returns the Final Score (or (si_rmse, latency_ms) for a Pareto search)."""

    def __init__(self, ctx: TrialContext, store, progress: StudyProgress | None = None):
        self.ctx = ctx
        self.store = store
        self.progress = progress  # prints where the study stands as each trial starts

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, float]:
        try:
            return self._run(trial)
        except optuna.TrialPruned:
            raise
        except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: Optuna marks the trial failed; say why in the record
            reason = f"interrupted: {exc.signal_name}" if isinstance(exc, Terminated) else "interrupted by the user"
            trial.set_user_attr("fail_reason", reason)
            raise
        except Exception as exc:  # recorded with its reason; optimize(catch=...) keeps the study going
            trial.set_user_attr("fail_reason", f"{type(exc).__name__}: {exc}"[:2000])
            console.print(f"trial {trial.number} failed: {type(exc).__name__}: {exc}", markup=False)
            raise

    def _prune(self, trial: optuna.Trial, reason: str) -> optuna.TrialPruned:
        trial.set_user_attr("fail_reason", reason)
        console.print(f"trial {trial.number} pruned: {reason}", markup=False)
        return optuna.TrialPruned(reason)

    def _screen(self, trial: optuna.Trial, estimate: LatencyEstimate | None) -> None:
        """Prune before training when even an optimistic si-RMSE at `estimate` cannot beat the study's best."""
        if reason := screen_reason(self.ctx, trial.study, estimate):
            trial.set_user_attr("latency_estimate_ms", estimate.ms)
            trial.set_user_attr("latency_estimate_source", estimate.source)
            trial.set_user_attr("pruned_before_training", True)
            trial.set_user_attr("screened_by", "latency_bound")
            raise self._prune(trial, reason)

    def _run(self, trial: optuna.Trial) -> float | tuple[float, float]:
        ctx, cfg = self.ctx, self.ctx.config
        label = f"trial {trial.number}"
        trial.set_user_attr("worker", worker_id())  # as the meter's lease holder
        if self.progress is not None:
            console.print(self.progress.line(trial.study), markup=False, highlight=False, soft_wrap=True)
        try:
            arch, training = ctx.space.sample(trial)
        except ArchError as exc:
            raise self._prune(trial, f"arch cannot be built: {exc}") from None
        trial.set_user_attr("arch", arch.to_dict())
        trial.set_user_attr("arch_id", arch.arch_id)
        trial.set_user_attr("precision", arch.precision)
        figures = arch_figures(arch, cfg.deploy_height, cfg.deploy_width)
        for key, value in figures.items():
            trial.set_user_attr(key, value)
        if reason := compute_cap_reason(ctx.space, figures, trial.user_attrs.get("preset")):
            trial.set_user_attr("pruned_before_training", True)
            trial.set_user_attr("screened_by", "compute_cap")
            raise self._prune(trial, f"{arch.backbone} at scale {arch.input_scale}: {reason}")
        weights = ctx.weights_for(arch.backbone)
        trial.set_user_attr("encoder_weights", weights.record())
        console.print(f"{label}: {arch.backbone}, depth {arch.depth}, decoder {list(arch.decoder_channels)}, "
                      f"skips {list(arch.skips)}, blocks {list(arch.blocks)}, {arch.upsample}, "
                      f"scale {arch.input_scale}, {arch.precision}, encoder weights {weights.kind}, "
                      f"{figures['macs'] / 1e6:.0f} MMACs", markup=False)

        ctx.meter.check_usable()  # every device known down: fail now, not after training and export
        study = trial.study
        stage_seconds: dict[str, float] = {}
        estimate = estimate_latency(ctx, study, arch, figures) if cfg.objective == "score" else None
        if estimate is not None and estimate.source == "predicted":
            trial.set_user_attr("latency_prediction_ms", estimate.ms)  # kept to judge the predictor
        self._screen(trial, estimate)  # a prediction's lower bound already hopeless: not even converted

        seed = cfg.seed + trial.number
        model = initial_network(arch, weights.file, seed)
        if cfg.times_before_training and timing_can_decide(ctx, study, estimate):
            t0 = time.perf_counter()
            measured = time_untrained(ctx, model, arch, label)
            stage_seconds["time_untrained"] = time.perf_counter() - t0
            trial.set_user_attr("stage_seconds", stage_seconds)
            estimate = LatencyEstimate(measured.median_ms, measured.median_ms, "measured")
            self._screen(trial, estimate)
        elif cfg.times_before_training and estimate.source == "predicted":  # kept whatever the device says
            trial.set_user_attr("latency_upper_ms", estimate.upper_ms)
            console.print(f"{label}: predicted {estimate.ms:.1f} ms (at most {estimate.upper_ms:.1f} ms) passes the "
                          "latency screen either way: trained without timing the untrained graph", markup=False)
        if estimate is not None:
            trial.set_user_attr("latency_estimate_ms", estimate.ms)
            trial.set_user_attr("latency_estimate_source", estimate.source)
        distill_lambda = float(training.get("distill_lambda", cfg.distill_lambda)) if cfg.distill else 0.0
        if ctx.distillation is not None and distill_lambda:
            trial.set_user_attr("distill", {**ctx.distillation.record, "lambda": distill_lambda})

        def report(step: int, val_si_rmse: float) -> bool:
            trial.set_user_attr("train_val_si_rmse", val_si_rmse)
            if estimate is None:  # nothing to compare like with like yet (Pareto, or too few measurements)
                return False
            value = final_score(val_si_rmse, estimate.ms / 1000.0, alpha=cfg.score_alpha, c=cfg.score_c)
            trial.report(value, step)
            if trial.should_prune():
                self._prune(trial, f"pruned at step {step}: estimated score {value:.3f} (validation si-RMSE "
                                   f"{val_si_rmse:.4f}, {estimate.source} latency {estimate.ms:.1f} ms)")
                return True
            return False

        result = train_candidate(ctx, model, arch, cfg.train_budget, label, seed, distill_lambda, on_eval=report)
        stage_seconds["train"] = result.seconds
        trial.set_user_attr("stage_seconds", stage_seconds)
        if result.stopped_early:
            raise optuna.TrialPruned(trial.user_attrs.get("fail_reason", "pruned"))

        with tempfile.TemporaryDirectory(prefix=f"nas-trial-{trial.number}-") as tmp:
            workdir = Path(tmp)
            deployed = deploy(ctx, model, arch, workdir, label)
            stage_seconds.update(deployed.stage_seconds)
            record = TrialRecord.build(arch, figures, deployed, stage_seconds, weights.record())
            arch_json = workdir / f"arch-{arch.arch_id}.json"
            arch_json.write_text(json.dumps(arch.to_dict(), indent=2))
            # Artifacts first: a record is written only once the files it points to are stored.
            for path in (deployed.tflite_path, deployed.preview_path, arch_json):
                upload_artifact(artifact_store=self.store, file_path=str(path), study_or_trial=trial)
            for key, value in record.as_attrs().items():
                trial.set_user_attr(key, value)
        if cfg.max_si_rmse is not None:  # feasible at ≤ 0: Optuna's best trial(s) and TPE honour it
            trial.set_user_attr("max_si_rmse", cfg.max_si_rmse)
            trial.set_constraint("si_rmse", record.si_rmse - cfg.max_si_rmse)
        above = (f" (above max_si_rmse {cfg.max_si_rmse:g}: infeasible)"
                 if cfg.max_si_rmse is not None and record.si_rmse > cfg.max_si_rmse else "")
        console.print(f"{label}: si-RMSE {record.si_rmse:.4f}, RMSE {record.rmse:.3f} m, {record.latency_ms:.1f} ms "
                      f"on {record.device} -> score {record.final_score:.3f}{above}", markup=False)
        if cfg.objective == "pareto":
            return record.si_rmse, record.latency_ms
        return record.final_score
