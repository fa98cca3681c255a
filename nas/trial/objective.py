"""The Optuna objective: one trial = its stages, size and cap → screen before training → train with pruning →
deploy and record.

Latency first: a candidate's latency is known (the same graph was timed before) or predicted from
the study's own measurements before it is trained. If even an optimistic si-RMSE at a latency
below the prediction cannot beat the study's best Final Score, the candidate is pruned before any
training, with the figures in its `fail_reason` (`nas.trial.screen`). Where the prediction leaves that
decision open, the untrained graph is converted and timed first (`time_before_training`). While training, the
intermediate values are the objective's own estimate, the Final Score from the validation si-RMSE
(deployment resolution, the same frames the TFLite model is scored on) and that latency, so Optuna's
pruners compare like with like, in the study's direction. Every attribute the trial carries is written
through `nas.trial.record`.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import torch
from optuna.artifacts import upload_artifact

from nas.arch import Arch, ArchError
from nas.infra.console import err as console
from nas.infra.db import worker_id
from nas.infra.signals import Terminated
from nas.infra.workers import trial_scratch
from nas.models.pretrained import WeightSource
from nas.trial.latency_model import arch_figures
from nas.hardware import MeasurementError
from nas.hardware import sustained as under_load
from nas.trial.pipeline import (TrialContext, deploy, initial_network, sustained_seconds, time_untrained,
                                train_candidate)
from nas.trial.progress import StudyProgress
from nas.trial.record import (TrialRecord, fail_reason_of, preset_of, record_arch, record_deployed, record_distill,
                              record_estimate, record_failure, record_floor, record_prediction, record_screened,
                              record_stage_seconds, record_sustained, record_upper_bound, record_validation,
                              record_weights, record_worker, record_budget, rank_among)
from nas.trial.trial_note import write_trial_note
from nas.trial.screen import LatencyEstimate, compute_cap_reason, estimate_latency, screen_reason, timing_can_decide


@dataclass
class Candidate:
    """A trial's architecture on its way through the stages, with what each stage learnt of it."""

    trial: optuna.Trial
    arch: Arch
    training: dict
    figures: dict[str, int]
    weights: WeightSource
    stage_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"trial {self.trial.number}"

    def seed(self, base: int) -> int:
        return base + self.trial.number


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
            record_failure(trial, reason)
            raise
        except Exception as exc:  # recorded with its reason; optimize(catch=...) keeps the study going
            record_failure(trial, f"{type(exc).__name__}: {exc}"[:2000])
            console.print(f"trial {trial.number} failed: {type(exc).__name__}: {exc}", markup=False)
            raise
        finally:
            write_trial_note(trial, sys.exc_info()[1])  # the trial's note in the dashboard, however it ended

    def _run(self, trial: optuna.Trial) -> float | tuple[float, float]:
        record_worker(trial, worker_id())  # as the meter's lease holder
        if self.progress is not None:
            console.print(self.progress.line(trial.study, trial.number), markup=False, highlight=False, soft_wrap=True)
        candidate = self._size_and_cap(trial)
        self.ctx.meter.check_usable()  # every device known down: fail now, not after training and export
        model, estimate = self._screen_before_training(candidate)
        self._train_with_pruning(candidate, model, estimate)
        record = self._deploy_and_record(candidate, model)
        if self.ctx.config.objective == "pareto":
            return record.si_rmse, record.latency_ms
        return record.final_score

    def _prune(self, trial: optuna.Trial, reason: str) -> optuna.TrialPruned:
        record_failure(trial, reason)
        return self._pruned(trial, reason)

    @staticmethod
    def _pruned(trial: optuna.Trial, reason: str) -> optuna.TrialPruned:
        console.print(f"trial {trial.number} pruned: {reason}", markup=False)
        return optuna.TrialPruned(reason)

    # --- stage 1: size and cap ----------------------------------------------------------------------------

    def _size_and_cap(self, trial: optuna.Trial) -> Candidate:
        """Sample the architecture, record it with its size, and prune it when it is above the compute cap."""
        ctx, cfg = self.ctx, self.ctx.config
        try:
            arch, training = ctx.space.sample(trial)
        except ArchError as exc:
            raise self._prune(trial, f"arch cannot be built: {exc}") from None
        figures = arch_figures(arch, cfg.deploy_height, cfg.deploy_width)
        record_arch(trial, arch, figures)
        if reason := compute_cap_reason(ctx.space, figures, preset_of(trial)):
            reason = f"{arch.backbone} at scale {arch.input_scale}: {reason}"
            record_screened(trial, "compute_cap", reason)
            raise self._pruned(trial, reason)
        weights = ctx.weights_for(arch.backbone)
        record_weights(trial, weights.record())
        console.print(f"trial {trial.number}: {arch.backbone}, depth {arch.depth}, decoder "
                      f"{list(arch.decoder_channels)}, skips {list(arch.skips)}, blocks {list(arch.blocks)}, "
                      f"{arch.upsample}, scale {arch.input_scale}, {arch.precision}, encoder weights {weights.kind}, "
                      f"{figures['macs'] / 1e6:.0f} MMACs", markup=False)
        return Candidate(trial, arch, training, figures, weights)

    # --- stage 2: screen before training ------------------------------------------------------------------

    def _screen(self, trial: optuna.Trial, estimate: LatencyEstimate | None) -> None:
        """Prune before training when even an optimistic si-RMSE at `estimate` cannot beat the study's best."""
        if reason := screen_reason(self.ctx, trial.study, estimate):
            record_screened(trial, "latency_bound", reason, estimate)
            raise self._pruned(trial, reason)

    def _screen_before_training(self, c: Candidate) -> tuple[torch.nn.Module, LatencyEstimate | None]:
        """The untrained network and the latency the pruner will go by, once the candidate passed the latency
        screen on its known or predicted latency, and on its measured one where timing it could decide."""
        ctx, cfg, trial = self.ctx, self.ctx.config, c.trial
        estimate = estimate_latency(ctx, trial.study, c.arch, c.figures) if cfg.objective == "score" else None
        if estimate is not None and estimate.source == "predicted":
            record_prediction(trial, estimate)
        self._screen(trial, estimate)  # a prediction's lower bound already hopeless: not even converted

        model = initial_network(c.arch, c.weights.file, c.seed(cfg.seed))
        if cfg.times_before_training and timing_can_decide(ctx, trial.study, estimate):
            t0 = time.perf_counter()
            measured = time_untrained(ctx, model, c.arch, c.label)
            c.stage_seconds["time_untrained"] = time.perf_counter() - t0
            record_stage_seconds(trial, c.stage_seconds)
            estimate = LatencyEstimate(measured.median_ms, measured.median_ms, "measured")
            self._screen(trial, estimate)
        elif cfg.times_before_training and estimate.source == "predicted":  # kept whatever the device says
            record_upper_bound(trial, estimate.upper_ms)
            console.print(f"{c.label}: predicted {estimate.ms:.1f} ms (at most {estimate.upper_ms:.1f} ms) passes "
                          "the latency screen either way: trained without timing the untrained graph", markup=False)
        if estimate is not None:
            record_estimate(trial, estimate)
        return model, estimate

    # --- stage 3: train with pruning ----------------------------------------------------------------------

    def _train_with_pruning(self, c: Candidate, model: torch.nn.Module, estimate: LatencyEstimate | None) -> None:
        """Train, reporting the estimated Final Score at each evaluation so Optuna's pruner can stop it
        (optuna.TrialPruned)."""
        ctx, cfg, trial = self.ctx, self.ctx.config, c.trial
        distill_lambda = float(c.training.get("distill_lambda", cfg.distill_lambda)) if cfg.distill else 0.0
        if ctx.distillation is not None and distill_lambda:
            record_distill(trial, {**ctx.distillation.record, "lambda": distill_lambda})

        def report(step: int, val_si_rmse: float) -> bool:
            record_validation(trial, val_si_rmse)
            if estimate is None:  # nothing to compare like with like yet (Pareto, or too few measurements)
                return False
            value = cfg.score_rule.score(val_si_rmse, estimate.ms)
            trial.report(value, step)
            if trial.should_prune():
                self._prune(trial, f"pruned at step {step}: estimated score {value:.3f} (validation si-RMSE "
                                   f"{val_si_rmse:.4f}, {estimate.source} latency {estimate.ms:.1f} ms)")
                return True
            return False

        record_budget(trial, cfg.train_budget.model_dump())
        result = train_candidate(ctx, model, c.arch, cfg.train_budget, c.label, c.seed(cfg.seed), distill_lambda,
                                 on_eval=report)
        c.stage_seconds["train"] = result.seconds
        record_stage_seconds(trial, c.stage_seconds)
        if result.stopped_early:
            raise optuna.TrialPruned(fail_reason_of(trial, "pruned"))

    # --- stage 4: deploy and record -----------------------------------------------------------------------

    def _deploy_and_record(self, c: Candidate, model: torch.nn.Module) -> TrialRecord:
        """Export, score and time the trained model, store its files, then its record and its accuracy verdict."""
        cfg, trial, arch = self.ctx.config, c.trial, c.arch
        with trial_scratch(trial.number) as tmp:  # named with the pid: a rerun removes it if this worker is killed
            workdir = Path(tmp)
            deployed = deploy(self.ctx, model, arch, workdir, c.label)
            c.stage_seconds.update(deployed.stage_seconds)
            record = TrialRecord.build(arch, c.figures, deployed, c.stage_seconds, c.weights.record())
            arch_json = workdir / f"arch-{arch.arch_id}.json"
            arch_json.write_text(json.dumps(arch.to_dict(), indent=2))
            # Artifacts first: a record is written only once the files it points to are stored.
            for path in (deployed.tflite_path, deployed.preview_path, arch_json):
                upload_artifact(artifact_store=self.store, file_path=str(path), study_or_trial=trial)
            record_deployed(trial, record)
            self._time_under_load(c, record, deployed.tflite_path)
        record_floor(trial, cfg.max_si_rmse, record.si_rmse)
        above = (f" (above max_si_rmse {cfg.max_si_rmse:g}: infeasible)"
                 if cfg.max_si_rmse is not None and record.si_rmse > cfg.max_si_rmse else "")
        console.print(f"{c.label}: si-RMSE {record.si_rmse:.4f}, RMSE {record.rmse:.3f} m, {record.latency_ms:.1f} ms "
                      f"on {record.device} -> score {record.final_score:.3f}{above}", markup=False)
        return record

    def _time_under_load(self, c: Candidate, record: TrialRecord, tflite_path: Path) -> None:
        """`sustained_top` N: a trial whose Final Score enters the study's top N (among the complete trials that
        meet the accuracy floor) is timed again under sustained load and the run recorded (`sustained`). It costs
        one more timing plus `sustained_s` of device time per such trial; the Final Score stays the burst figure's.
        A failure is a note: the trial's figures stand without it."""
        cfg, trial = self.ctx.config, c.trial
        top = cfg.sustained_top
        if top <= 0 or (cfg.max_si_rmse is not None and record.si_rmse > cfg.max_si_rmse):
            return
        rank = rank_among(trial.study, record.final_score, trial.number)
        if rank > top:
            return
        seconds = sustained_seconds(self.ctx)
        console.print(f"{c.label}: in the top {top} (rank {rank}), timing {seconds:g} s under sustained load on "
                      f"{record.device} (sustained_top: one sustained run per trial entering the top {top}, "
                      f"a timing plus {seconds:g} s of device time each)", markup=False)
        started = time.perf_counter()
        try:
            latency = self.ctx.meter.measure(tflite_path, progress=lambda msg: console.print(f"{c.label}: {msg}"),
                                             sustained_s=seconds)
        except MeasurementError as exc:
            console.print(f"{c.label}: not timed under sustained load: {exc}", markup=False)
            return
        if not latency.sustained:
            return
        run = {**latency.sustained, "device": latency.device, "threads": latency.threads, "rank": rank,
               "cost_s": round(time.perf_counter() - started, 3)}
        record_sustained(trial, run)
        console.print(f"{c.label}: under load: {under_load.summary(run)}", markup=False)
        if caution := under_load.warning(run):
            console.print(f"{c.label}: warning: {caution}", markup=False)
