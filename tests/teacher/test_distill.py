"""Distillation: the loss, aligned augmentation, prepare_distillation, and trial records (distilled, pruned)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
import yaml
from optuna.artifacts import FileSystemArtifactStore

from nas.config import BUDGETS, REPO_ROOT, RunConfig
from nas.data.augment import flip_and_crop
from nas.data.dataset import load_split
from nas.data.synth import synthesize
from nas.errors import ConfigError
from nas.hardware import load_hardware
from nas.metrics import final_score
from nas.models import DepthNet
from nas.presets import PRESETS
from nas.space import load_space
from nas.teacher import SPEC_FILE, register_model
from nas.teacher.distill import DistilledLoss, prepare_distillation
from nas.train.loop import train
from nas.train.losses import distillation_loss, supervised_loss
from nas.trial.objective import TrialObjective
from nas.trial.session import TrialContext, prepare_context

SMOKE_SPACE = REPO_ROOT / "search_spaces" / "smoke.yaml"


def add_measured_trials(study: optuna.Study, value: float, count: int = 4) -> None:
    """Complete trials with graph figures and latencies, as earlier measurements of a study would leave."""
    for i in range(count):
        macs, acts = 2e7 * (i + 1), 1e6 * (i + 1)
        study.add_trial(optuna.trial.create_trial(value=value, user_attrs={
            "macs": macs, "activations": acts, "latency_ms": 1.0 + macs / 1e7 + acts / 1e6, "precision": "fp32",
            "si_rmse": 0.9}))


class BrightnessTeacher(torch.nn.Module):
    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return 1.0 + image.mean(dim=1, keepdim=True) / 64.0


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    synthesize(root, {"train": 6, "validation": 2}, seed=3, width=128, height=96)
    return root


@pytest.fixture(scope="module")
def user_teacher(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A teacher folder holding a user's TorchScript model (instant, unlike training one)."""
    folder = tmp_path_factory.mktemp("teacher")
    path = folder.parent / "brightness.pt"
    torch.jit.script(BrightnessTeacher()).save(str(path))
    register_model(path, folder)
    return folder


# -- the loss -----------------------------------------------------------------------------------


def test_distillation_loss_is_zero_when_student_equals_teacher() -> None:
    torch.manual_seed(0)
    teacher = torch.rand(2, 1, 24, 32) * 10 + 0.5
    same = teacher.clone().requires_grad_(True)
    loss = distillation_loss(same, teacher)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    loss.backward()
    assert torch.isfinite(same.grad).all()
    # Fully scale-invariant: a student off by a constant factor is not punished by the teacher term.
    assert distillation_loss(teacher * 3.0, teacher).item() == pytest.approx(0.0, abs=1e-5)
    noisy = teacher * torch.exp(torch.randn_like(teacher) * 0.3)
    assert distillation_loss(noisy, teacher).item() > 0.2
    # Student loss = supervised + lambda x distillation; with student == teacher only the first remains.
    gt = teacher.clone()
    gt[:, :, :8] = 0.0
    batch = {"depth": gt, "teacher": teacher}
    assert DistilledLoss(0.5)(teacher, batch).item() == pytest.approx(supervised_loss(teacher, gt).item(), abs=1e-5)
    expected = supervised_loss(noisy, gt) + 0.5 * distillation_loss(noisy, teacher)
    assert DistilledLoss(0.5)(noisy, batch).item() == pytest.approx(expected.item(), rel=1e-6)


def test_teacher_supervises_pixels_without_ground_truth() -> None:
    torch.manual_seed(1)
    teacher = torch.rand(1, 1, 16, 16) * 5 + 1
    gt = teacher.clone()
    gt[..., :6, :] = 0.0  # unknown ground truth in the top rows
    pred = teacher.clone()
    pred[..., :6, :] *= torch.exp(torch.randn(1, 1, 6, 16) * 0.5)  # wrong only where gt is unknown
    assert supervised_loss(pred, gt).item() == pytest.approx(supervised_loss(teacher, gt).item(), abs=1e-6)
    batch = {"depth": gt, "teacher": teacher}
    assert DistilledLoss(1.0)(pred, batch).item() > DistilledLoss(1.0)(teacher, batch).item() + 0.1


# -- augmentation -------------------------------------------------------------------------------


def test_flipped_crop_keeps_image_ground_truth_and_teacher_aligned() -> None:
    h, w = 48, 64
    cols = torch.arange(w, dtype=torch.float32).expand(h, w)
    rows = torch.arange(h, dtype=torch.float32).unsqueeze(1).expand(h, w)
    image = torch.stack([cols * 4, rows * 4, torch.zeros(h, w)]).unsqueeze(0)  # pixel coordinates as colour
    depth = (1 + cols + 100 * rows).view(1, 1, h, w)  # a unique value per pixel
    depth_with_holes = depth.clone()
    depth_with_holes[..., ::3, ::5] = 0.0
    teacher = depth * 2.0
    seen = set()
    for seed in range(40):
        out = flip_and_crop({"image": image, "depth": depth_with_holes, "teacher": teacher},
                            torch.Generator().manual_seed(seed))
        d, t, im = out["depth"][0, 0], out["teacher"][0, 0], out["image"][0]
        known = d > 0
        assert torch.equal(t[known], 2 * d[known])  # teacher and ground truth: the same pixels
        src_col = (t - 2) / 2 % 100  # column each output pixel came from, read from the teacher
        src_row = torch.div(t / 2 - 1, 100, rounding_mode="floor")
        assert (im[0] / 4 - src_col).abs().max() <= 1.0  # image colour says the same (bilinear: within a pixel)
        assert (im[1] / 4 - src_row).abs().max() <= 1.0
        flipped = bool(src_col[0, 0] > src_col[0, -1])
        cropped = bool(src_col.max() - src_col.min() < w - 1 or src_row.max() - src_row.min() < h - 1)
        seen.add((flipped, cropped))
    assert (True, True) in seen and (False, True) in seen  # both flipped and unflipped crops were checked


# -- prepare_distillation and training ------------------------------------------------------------


def test_prepare_distillation_trains_and_caches_the_default_teacher_once(data: Path, tmp_path: Path) -> None:
    config = RunConfig(data=data, results=tmp_path, budget="smoke")
    split = load_split(data, "train", (128, 96), BUDGETS["smoke"].train_limit)
    dist = prepare_distillation(config.teacher_setting, split, config.train_budget)
    assert dist is not None and dist.maps.shape == (6, 96, 128) and dist.maps.dtype == np.float16
    rec = dist.record
    assert rec["teacher_dir"] == str((tmp_path / "teacher" / "smoke").resolve()) and rec["teacher"] == "depthnet/resnet18"
    assert len(rec["fingerprint"]) == 64 and rec["resolution"] == [96, 128] and rec["teacher_val_si_rmse"] > 0
    stamp = (tmp_path / "teacher" / "smoke" / SPEC_FILE).stat().st_mtime_ns
    again = prepare_distillation(config.teacher_setting, split, config.train_budget)  # reused: no training, same cache
    assert (tmp_path / "teacher" / "smoke" / SPEC_FILE).stat().st_mtime_ns == stamp
    assert again.record == rec and np.array_equal(np.asarray(again.maps), np.asarray(dist.maps))

    seen: list[tuple[int, ...]] = []
    base = DistilledLoss(0.5)

    def loss_fn(pred: torch.Tensor, batch: dict) -> torch.Tensor:
        seen.append(tuple(batch["teacher"].shape))
        assert torch.all(batch["teacher"] > 0)
        return base(pred, batch)

    budget = BUDGETS["smoke"].model_copy(update={"steps": 3})
    result = train(DepthNet(PRESETS["litedepth"]), split, budget, extra_maps={"teacher": dist.maps}, loss_fn=loss_fn,
                   device=torch.device("cpu"))
    assert result.steps == 3 and np.isfinite(result.final_loss)
    assert seen == [(4, 1, 96, 128)] * 3
    assert isinstance(dist.make_loss(0.25), DistilledLoss) and dist.make_loss(0.25).weight == 0.25
    off = config.model_copy(update={"distill": False})
    assert prepare_distillation(off.teacher_setting, split, off.train_budget) is None


def test_user_teacher_folder_and_missing_folder(data: Path, user_teacher: Path, tmp_path: Path) -> None:
    split = load_split(data, "train", (128, 96))  # the smoke budget's resolution, that of the cache
    config = RunConfig(data=data, results=tmp_path, teacher=user_teacher, budget="smoke")
    dist = prepare_distillation(config.teacher_setting, split, config.train_budget)
    assert dist.record["teacher"] == "torchscript/model.pt" and dist.maps.shape == (6, 96, 128)
    expected = 1 + split.rgb.astype(np.float32).mean(-1) / 64
    np.testing.assert_allclose(np.asarray(dist.maps, np.float32), expected, rtol=2e-3)
    assert not (tmp_path / "teacher").exists()  # a given teacher is used, none is trained
    with pytest.raises(ConfigError, match="teacher folder does not exist"):
        config = RunConfig(data=data, results=tmp_path, teacher=tmp_path / "nope")
        prepare_distillation(config.teacher_setting, split, config.train_budget)


# -- trials ---------------------------------------------------------------------------------------


def _context(config: RunConfig) -> TrialContext:
    """The real pipeline context (frames decoded under results/, local device, the config's teacher)."""
    config = config.model_copy(update={"deploy_height": 96, "deploy_width": 128})
    return prepare_context(config, load_space(config.space), load_hardware(config.hardware))


def _run_one_pruned_trial(ctx: TrialContext, tmp_path: Path) -> optuna.trial.FrozenTrial:
    """Every report above 0 is pruned, so training stops at its first evaluation: no export runs.

    Four earlier measurements (tiny scores) let the predictor estimate the candidate's latency, so the
    trial reports estimated Final Scores; the screen lets it through since the incumbent is weak.
    """
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(upper=0.0),
                                sampler=optuna.samplers.RandomSampler(seed=0))
    add_measured_trials(study, value=1e-6)
    study.optimize(TrialObjective(ctx, FileSystemArtifactStore(str(tmp_path / "artifacts"))), n_trials=1)
    return study.trials[-1]


def test_pruned_trial_is_recorded_as_pruned_with_its_last_figures(data: Path, tmp_path: Path) -> None:
    config = RunConfig(data=data, results=tmp_path, budget="smoke", space=SMOKE_SPACE, distill=False)
    trial = _run_one_pruned_trial(_context(config), tmp_path)
    assert trial.state == optuna.trial.TrialState.PRUNED
    first_eval = BUDGETS["smoke"].steps // BUDGETS["smoke"].eval_points  # 6 of 12 steps
    assert list(trial.intermediate_values) == [first_eval]  # stopped at the first report
    attrs = trial.user_attrs
    assert attrs["train_val_si_rmse"] > 0
    # The intermediate value is the objective's own estimate: the Final Score at the predicted latency.
    estimate = final_score(attrs["train_val_si_rmse"], attrs["latency_estimate_ms"] / 1000.0)
    assert trial.intermediate_values[first_eval] == pytest.approx(estimate)
    assert attrs["latency_estimate_source"] == "predicted"
    assert attrs["fail_reason"].startswith(f"pruned at step {first_eval}: estimated score {estimate:.3f}")
    assert "si_rmse" not in attrs and "tflite_sha256" not in attrs and "distill" not in attrs
    assert attrs["stage_seconds"]["train"] > 0 and attrs["arch_id"]


def test_trial_with_distillation_records_teacher_and_lambda(data: Path, user_teacher: Path, tmp_path: Path) -> None:
    space = yaml.safe_load(SMOKE_SPACE.read_text())
    space["params"]["distill_lambda"] = {"choices": [0.25]}  # lambda as a search dimension
    space_file = tmp_path / "space.yaml"
    space_file.write_text(yaml.safe_dump(space, sort_keys=False))  # sampling order matters
    config = RunConfig(data=data, results=tmp_path, budget="smoke", space=space_file, teacher=user_teacher)
    ctx = _context(config)
    dist = ctx.distillation
    trial = _run_one_pruned_trial(ctx, tmp_path)
    recorded = trial.user_attrs["distill"]
    assert recorded["lambda"] == 0.25 and trial.params["distill_lambda"] == 0.25
    assert recorded["teacher_dir"] == str(user_teacher.resolve()) and recorded["teacher"] == "torchscript/model.pt"
    assert recorded["fingerprint"] == dist.record["fingerprint"] and recorded["resolution"] == [96, 128]
    assert trial.state == optuna.trial.TrialState.PRUNED and trial.user_attrs["train_val_si_rmse"] > 0
