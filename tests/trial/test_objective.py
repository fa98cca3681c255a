"""Trial-level behaviour that needs no export: unbuildable archs are pruned with their reason."""

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import optuna

from nas.config import load_config
from nas.space import load_space
from nas.trial.objective import TrialObjective

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


# -- latency first and pruning on the objective ---------------------------------------------------

import pytest  # noqa: E402
from helpers import REPO
from helpers.devices import local_device, write_profile  # noqa: E402

from nas.hardware import load_hardware  # noqa: E402
from nas.metrics import final_score  # noqa: E402
from nas.trial.screen import screen_reason, timing_can_decide, LatencyEstimate  # noqa: E402

SMOKE_SPACE = REPO / "search_spaces" / "smoke.yaml"


def add_measured_trials(study: optuna.Study, value: float, si: float, count: int = 4) -> None:
    """Complete trials with graph figures, latencies and one intermediate value per evaluation step."""
    for i in range(count):
        macs, acts = 2e7 * (i + 1), 1e6 * (i + 1)
        study.add_trial(optuna.trial.create_trial(
            value=value, intermediate_values={6: value, 12: value},
            user_attrs={"macs": macs, "activations": acts, "latency_ms": 1.0 + macs / 1e7 + acts / 1e6,
                        "precision": "fp32", "si_rmse": si}))


@pytest.fixture(scope="module")
def smoke_context(tmp_path_factory):
    from nas.data.synth import synthesize
    from nas.trial.session import prepare_context

    root = tmp_path_factory.mktemp("objective")
    synthesize(root / "data", {"train": 6, "validation": 2}, seed=5, width=128, height=96)
    hardware = write_profile(root / "local.yaml", local_device())  # figures cached even on a busy machine
    config = load_config(None, data=root / "data", results=root / "results", budget="smoke", space=SMOKE_SPACE,
                         distill=False, deploy_height=96, deploy_width=128, hardware=hardware)
    return prepare_context(config, load_space(SMOKE_SPACE), load_hardware(config.hardware))


def test_a_candidate_that_cannot_win_is_screened_before_training(smoke_context):
    study = optuna.create_study(direction="maximize")
    add_measured_trials(study, value=1e6, si=0.2)  # an incumbent no smoke candidate can reach
    study.optimize(TrialObjective(smoke_context, store=None), n_trials=1)
    trial = study.trials[-1]
    assert trial.state == optuna.trial.TrialState.PRUNED and trial.user_attrs["pruned_before_training"]
    reason = trial.user_attrs["fail_reason"]
    assert reason.startswith("latency bound: predicted latency") and "< best 1000000.000" in reason
    assert "stage_seconds" not in trial.user_attrs and not trial.intermediate_values  # nothing was trained


def test_the_screen_keeps_every_candidate_of_a_pareto_study_and_needs_an_incumbent(smoke_context):
    study = optuna.create_study(direction="maximize")
    slow = LatencyEstimate(ms=1000.0, lower_ms=900.0, source="predicted")
    assert screen_reason(smoke_context, study, slow) is None  # no complete trial yet: nothing to beat
    add_measured_trials(study, value=1e6, si=0.2)
    assert screen_reason(smoke_context, study, slow).startswith("latency bound")
    pareto = smoke_context.__class__(**{**smoke_context.__dict__,
                                        "config": smoke_context.config.model_copy(update={"objective": "pareto"})})
    assert screen_reason(pareto, study, slow) is None


def test_the_untrained_graph_is_timed_only_where_the_measurement_could_change_the_screen(smoke_context):

    study = optuna.create_study(direction="maximize")
    add_measured_trials(study, value=1.0, si=0.2)
    cfg = smoke_context.config
    # The latency at which the best possible score is 1/0.9 = 1.11, above the incumbent's 1.0.
    fast_ms = 900.0 * cfg.score_rule.upper_bound(0.2 - cfg.bound_margin, 1000.0)
    clear = LatencyEstimate(ms=fast_ms * 0.9, lower_ms=fast_ms * 0.7, source="predicted", upper_ms=fast_ms)
    assert screen_reason(smoke_context, study, clear) is None
    assert not timing_can_decide(smoke_context, study, clear)  # kept at its upper bound: timing changes nothing
    open_ = LatencyEstimate(ms=fast_ms, lower_ms=fast_ms * 0.8, source="predicted", upper_ms=fast_ms * 1.25)
    assert screen_reason(smoke_context, study, open_) is None and timing_can_decide(smoke_context, study, open_)
    assert timing_can_decide(smoke_context, study, None)  # nothing predicted yet
    assert not timing_can_decide(smoke_context, study, LatencyEstimate(fast_ms * 2, fast_ms * 2, "measured"))
    assert timing_can_decide(with_config(smoke_context, time_before_training=True), study, clear)


def test_a_candidate_kept_at_its_predicted_upper_bound_trains_without_timing(smoke_context, monkeypatch):
    monkeypatch.setattr("nas.config.TIME_UNTRAINED_AT", frozenset({"smoke"}))  # auto's timing at this budget
    ctx = with_config(smoke_context, time_before_training="auto")
    assert ctx.config.times_before_training
    study = optuna.create_study(direction="maximize", pruner=PruneAtFirstReport())
    add_measured_trials(study, value=1e-3, si=0.9)  # an incumbent any candidate beats at any latency
    study.optimize(TrialObjective(ctx, store=None), n_trials=1)
    attrs = study.trials[-1].user_attrs
    assert "time_untrained" not in attrs["stage_seconds"] and attrs["stage_seconds"]["train"] > 0
    assert attrs["latency_estimate_source"] == "predicted"
    assert attrs["latency_upper_ms"] >= 1.25 * attrs["latency_estimate_ms"]
    (value,) = study.trials[-1].intermediate_values.values()  # the pruner saw the prediction
    assert value == pytest.approx(final_score(attrs["train_val_si_rmse"], attrs["latency_estimate_ms"] / 1000.0))


def with_config(ctx, **changes):
    """The context with some settings changed."""
    return ctx.__class__(**{**ctx.__dict__, "config": ctx.config.model_copy(update=changes)})


class RecordingMedianPruner(optuna.pruners.MedianPruner):
    """The median pruner's decisions, recorded; stops the trial at its last report so no export runs."""

    def __init__(self):
        super().__init__(n_startup_trials=2, n_warmup_steps=0)
        self.decisions: list[bool] = []

    def prune(self, study, trial) -> bool:
        self.decisions.append(super().prune(study, trial))
        return max(trial.intermediate_values) >= 12


def test_the_median_pruner_keeps_an_accurate_fast_candidate(smoke_context):
    # Earlier candidates: inaccurate (si-RMSE 0.9) and about as fast, so their estimated scores are low.
    pruner = RecordingMedianPruner()
    study = optuna.create_study(direction="maximize", pruner=pruner, sampler=optuna.samplers.RandomSampler(seed=1))
    add_measured_trials(study, value=0.65, si=0.9)
    study.optimize(TrialObjective(smoke_context, store=None), n_trials=1)  # predicted latency (timed: below)
    trial = study.trials[-1]
    values = trial.intermediate_values
    assert sorted(values) == [6, 12] and pruner.decisions == [False, False]
    # Reported values point the way of the objective: estimated Final Scores, higher is better, here far
    # above the slow candidates' (reporting si-RMSE, 0.5 < 0.65, would have pruned the better network).
    assert all(v > 0.65 for v in values.values())
    assert values[12] == pytest.approx(final_score(trial.user_attrs["train_val_si_rmse"],
                                                   trial.user_attrs["latency_estimate_ms"] / 1000.0))


def test_an_int8_space_needs_a_calibration_set_before_the_study_starts(tmp_path):
    from nas.data.synth import synthesize
    from nas.errors import ConfigError
    from nas.trial.session import check_inputs

    synthesize(tmp_path / "data", {"train": 2, "validation": 1}, seed=0, width=64, height=48)
    space = tmp_path / "space.yaml"
    space.write_text("params:\n  precision: {choices: [fp32, int8]}\n")
    config = load_config(None, data=tmp_path / "data", space=space, results=tmp_path / "r")
    with pytest.raises(ConfigError, match="2 available, at least 4 needed") as info:
        check_inputs(config)
    assert str(tmp_path / "data" / "train") in str(info.value)
    space.write_text("params:\n  precision: {choices: [fp32]}\n")
    check_inputs(config)  # fp32 only: nothing to calibrate


def test_a_candidate_above_the_compute_cap_is_pruned_in_seconds_but_a_preset_is_not(tmp_path):
    """The cap prunes before any weight exists (meta device); a preset enqueued by name is exempt."""
    from nas.presets import PRESETS
    from nas.trial.latency_model import arch_figures
    from nas.trial.screen import compute_cap_reason

    space_file = tmp_path / "space.yaml"
    space_file.write_text("max_mmacs: 1\nparams:\n  backbone: {choices: [tf_mobilenetv3_small_minimal_100]}\n"
                          "  input_scale: {choices: ['96x128']}\n")
    space = load_space(space_file)
    ctx = SimpleNamespace(config=load_config(None, results=tmp_path), space=space)
    study = optuna.create_study(direction="maximize")
    study.optimize(TrialObjective(ctx, store=None), n_trials=1)
    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.PRUNED and trial.user_attrs["pruned_before_training"]
    assert "compute cap" in trial.user_attrs["fail_reason"] and str(space_file) in trial.user_attrs["fail_reason"]
    assert trial.user_attrs["macs"] > 1e6  # the figures that decided are on the record
    litedepth = arch_figures(PRESETS["litedepth"], 480, 640)
    assert compute_cap_reason(space, litedepth, preset="litedepth") is None
    assert compute_cap_reason(space, litedepth, preset=None) is not None


def test_meta_device_figures_equal_those_of_the_real_model():
    from nas.models import DepthNet, count_params
    from nas.presets import PRESETS
    from nas.trial.latency_model import arch_figures, graph_figures

    arch = PRESETS["litedepth"]
    model = DepthNet(arch)
    assert arch_figures(arch, 96, 128) == {"params": count_params(model), **graph_figures(model, 96, 128)}


def test_the_mission_space_caps_compute_above_litedepth():
    from nas.presets import PRESETS
    from nas.trial.latency_model import arch_figures

    space = load_space(REPO / "search_spaces" / "mai2021.yaml")
    assert space.max_mmacs is not None
    assert arch_figures(PRESETS["litedepth"], 480, 640)["macs"] < space.max_mmacs * 1e6


class PruneAtFirstReport(optuna.pruners.BasePruner):
    def prune(self, study, trial) -> bool:
        return True


def test_a_new_graph_is_timed_untrained_and_the_pruner_sees_that_latency(smoke_context):
    from nas.arch import Arch
    from nas.trial.pipeline import graph_key

    study = optuna.create_study(direction="maximize", pruner=PruneAtFirstReport())
    study.enqueue_trial({"backbone": "tf_mobilenetv3_small_minimal_100", "head": "softplus", "upsample": "nearest"})
    study.optimize(TrialObjective(with_config(smoke_context, time_before_training=True), store=None), n_trials=1)
    trial = study.trials[-1]
    attrs = trial.user_attrs
    assert attrs["latency_estimate_source"] == "measured" and attrs["stage_seconds"]["time_untrained"] > 0
    # The figure is the graph's: stored under its key, so the trained model's measurement is served from it.
    cached = smoke_context.meter.cached(graph_key(Arch.from_dict(attrs["arch"]), smoke_context.config))
    assert cached is not None and cached.median_ms == attrs["latency_estimate_ms"]
    (value,) = trial.intermediate_values.values()
    assert value == pytest.approx(final_score(attrs["train_val_si_rmse"], attrs["latency_estimate_ms"] / 1000.0))


def test_a_timed_graph_that_cannot_win_is_screened_before_training(smoke_context):
    from nas.trial.screen import latency_points

    study = optuna.create_study(direction="maximize")
    # An incumbent without latency figures: nothing to predict from, so the screen waits for the timing.
    study.add_trial(optuna.trial.create_trial(value=1e6, user_attrs={"si_rmse": 0.2}))
    study.enqueue_trial({"backbone": "mobilenetv3_small_100", "head": "relu", "upsample": "bilinear"})
    study.optimize(TrialObjective(with_config(smoke_context, time_before_training=True), store=None), n_trials=1)
    trial = study.trials[-1]
    attrs = trial.user_attrs
    assert trial.state == optuna.trial.TrialState.PRUNED and attrs["screened_by"] == "latency_bound"
    assert attrs["fail_reason"].startswith("latency bound: measured latency")
    assert "time_untrained" in attrs["stage_seconds"] and "train" not in attrs["stage_seconds"]
    assert not trial.intermediate_values  # never trained
    # The measurement teaches the predictor although the trial was screened.
    assert [p.latency_ms for p in latency_points(study)] == [attrs["latency_estimate_ms"]]
