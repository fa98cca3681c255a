"""The self-managed teacher: a wide DepthNet trained once per budget, retrained only when stale."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import torch

from nas.arch import Arch, ArchError
from nas.config import Budget
from nas.infra.console import err
from nas.data.dataset import load_split
from nas.errors import ConfigError
from nas.infra.files import atomic_path, sha256_file
from nas.models import DepthNet, count_params
from nas.models.pretrained import fallback_line, resolve_weights
from nas.train.loop import StepOptions, default_device, train
from nas.teacher.predictors import Predictor, evaluate_teacher
from nas.teacher.progress import metrics_line, progress_bar
from nas.teacher.spec import WEIGHTS_FILE, TeacherSpec, data_fingerprint, read_spec, write_spec

# Teacher budgets, named like the student budgets they serve (`nas run --budget B` trains teacher B):
# a bigger network and more steps than any candidate of that budget gets, and on a GPU more pixels.
TEACHER_BUDGETS: dict[str, Budget] = {
    # Tests: seconds on a CPU.
    "smoke": Budget(name="teacher-smoke", train_height=96, train_width=128, steps=10, batch_size=4, lr=1e-3,
                    train_limit=16, eval_points=1),
    # The embedded default on a 2-core CPU, measured on the default synthetic data: about 3 minutes, validation
    # si-RMSE 0.22 against 0.31 for a 150-step Tencent GY-Lab student. At the student's resolution because on a
    # CPU steps beat pixels (144×192 for the same time: 0.25), and efficientnet_b0 because ResNet-50 gets
    # only 120 steps in that time (0.27).
    "quick": Budget(name="teacher-quick", train_height=120, train_width=160, steps=300, batch_size=8, lr=1e-3,
                    eval_points=3),
    # A GPU user: 3/4 deployment resolution, about 23 epochs of MAI 2021 (8.3k images).
    "full": Budget(name="teacher-full", train_height=360, train_width=480, steps=12000, batch_size=16, lr=5e-4,
                   eval_points=6),
}
DEFAULT_BACKBONES: dict[str, str] = {"smoke": "resnet18", "quick": "efficientnet_b0", "full": "resnet50"}
TEACHER_DECODER = (256, 128, 64, 32, 32)


def teacher_budget(name: str, steps: int | None = None) -> Budget:
    """The teacher budget of that name, with its step count overridden when `steps` is given."""
    if name not in TEACHER_BUDGETS:
        raise ConfigError(None, f"unknown teacher budget {name!r}; choose from {', '.join(TEACHER_BUDGETS)}")
    budget = TEACHER_BUDGETS[name]
    return budget.model_copy(update={"steps": steps}) if steps else budget


def teacher_arch(backbone: str) -> Arch:
    """A wide U-Net at full internal resolution: the teacher has no latency to care about."""
    return Arch(backbone=backbone, depth=5, decoder_channels=TEACHER_DECODER, skips=("concat",) * 4 + ("none",),
                blocks=("conv",) * 5, upsample="bilinear", input_scale="1", head="softplus")


def _read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors or a torch file, unwrapping the usual {"state_dict"/"model": ...}."""
    if not path.is_file():
        raise ConfigError(path, "checkpoint file does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unreadable file is a user input error
        raise ConfigError(path, f"cannot read checkpoint ({type(exc).__name__}: {exc})") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(path, "not a state dict of tensors")
    return state


def load_init(model: DepthNet, path: Path) -> str:
    """Load a whole-teacher or a backbone-only (e.g. ImageNet classifier) checkpoint; say what loaded."""
    state = _read_checkpoint(Path(path))
    own = model.state_dict()
    if all(k in own and own[k].shape == v.shape for k, v in state.items()):
        model.load_state_dict(state, strict=False)
        return f"{len(state)} tensors of the whole teacher"
    target = model.encoder.model
    enc = target.state_dict()
    fitting = {k: v for k, v in state.items() if k in enc and enc[k].shape == v.shape}
    if not fitting:
        raise ConfigError(path, f"no tensor fits the teacher (backbone {model.arch.backbone}); "
                                "pass a checkpoint of the same backbone")
    target.load_state_dict(fitting, strict=False)
    return f"{len(fitting)}/{len(enc)} backbone tensors"


def train_teacher(data_root: Path, out: Path, budget_name: str = "quick", backbone: str | None = None,
                  init: Path | None = None, steps: int | None = None, seed: int = 0,
                  device: torch.device | None = None, pretrained: str | Path = "none") -> TeacherSpec:
    """Train a DepthNet teacher on `data_root` and write teacher.pt + teacher.json into `out`.

    `pretrained` (as `nas.models.pretrained`) picks the backbone's starting weights; `init` loads on top.
    The self-managed teacher (`ensure_teacher`) keeps `none`, so its recipe does not depend on a cache.
    Callers hold `folder_lock(out)`, as every writer of a teacher folder (it clears killed writers' files).
    """
    budget = teacher_budget(budget_name, steps)
    backbone = backbone or DEFAULT_BACKBONES[budget_name]
    data_root, out = Path(data_root), Path(out)
    data_fp = data_fingerprint(data_root, ("train", "validation"))
    weights = resolve_weights(pretrained, [backbone])[backbone]
    if line := fallback_line(pretrained, {backbone: weights}):
        err.print(line, markup=False, highlight=False, soft_wrap=True)
    try:
        arch = teacher_arch(backbone)
        model = DepthNet(arch, weights.file)
    except ArchError as exc:
        raise ConfigError(None, f"teacher backbone: {exc}") from None
    init_note = load_init(model, Path(init)) if init else None
    hw = (budget.train_height, budget.train_width)
    with err.status(f"loading training data at {hw[1]}×{hw[0]}"):
        train_split = load_split(data_root, "train", (hw[1], hw[0]), budget.train_limit)
        val_split = load_split(data_root, "validation", (hw[1], hw[0]), budget.val_limit)
    device = device or default_device()
    err.print(f"training teacher {backbone} ({count_params(model) / 1e6:.1f} M params) for {budget.steps} steps "
              f"at {hw[1]}×{hw[0]} on {device}" + (f", initialised from {init} ({init_note})" if init else ""))
    progress = progress_bar("teacher training")
    task = progress.add_task("train", total=budget.steps, info="")

    def report(step: int, val_si_rmse: float) -> bool:
        progress.console.print(f"  teacher step {step}: validation si-RMSE {val_si_rmse:.4f}")
        return False  # never stop early: the teacher gets its whole budget

    def advance(step: int, total: int, loss: float) -> None:
        progress.update(task, completed=step, info=f"loss {loss:.3f}")

    with progress:
        result = train(model, train_split, budget, val_split=val_split, seed=seed, device=device, on_eval=report,
                       progress=advance, options=StepOptions.for_device(device, compute_bound=True))
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / WEIGHTS_FILE) as tmp:
        torch.save(model.cpu().state_dict(), tmp)
    spec = TeacherSpec(kind="depthnet", model_file=WEIGHTS_FILE, model_sha256=sha256_file(out / WEIGHTS_FILE),
                       arch=arch.to_dict(), budget=budget.model_dump(), input_hw=hw, data_root=str(data_root.resolve()),
                       data_fingerprint=data_fp, init=str(init) if init else None,
                       encoder_weights=weights.record(), seed=seed,
                       params=count_params(model), train_seconds=round(result.seconds, 1),
                       created=datetime.now(timezone.utc).isoformat())
    spec.val_metrics = evaluate_teacher(Predictor(spec, out, device), data_root, hw, limit=budget.val_limit)
    write_spec(out, spec)
    err.print(f"teacher written to {out}: {result.steps} steps in {result.seconds:.0f} s, "
              f"{metrics_line(spec.val_metrics)}")
    return spec


def ensure_teacher(folder: Path, data_root: Path, budget_name: str, seed: int = 0,
                   backbone: str | None = None) -> tuple[TeacherSpec, bool]:
    """The self-managed teacher: reuse when its recipe and data fingerprint match, else train it.

    Returns (spec, trained_now). Callers hold `folder_lock(folder)`.
    """
    spec = read_spec(folder)
    budget = teacher_budget(budget_name)
    backbone = backbone or DEFAULT_BACKBONES[budget_name]
    if spec is not None and spec.kind == "depthnet" and (Path(folder) / spec.model_file).is_file():
        same_recipe = spec.budget == budget.model_dump() and spec.arch == teacher_arch(backbone).to_dict()
        same_data = spec.data_fingerprint == data_fingerprint(data_root, ("train", "validation"))
        if same_recipe and same_data and sha256_file(Path(folder) / spec.model_file) == spec.model_sha256:
            return spec, False
        why = "the data set changed" if same_recipe else "the teacher recipe changed"
        err.print(f"teacher in {folder} is stale ({why}); training it again")
    else:
        err.print(f"no teacher for budget {budget_name} yet under {folder}: training one ({backbone}, about "
                  f"{budget.steps} steps at {budget.train_width}×{budget.train_height}); later runs of this budget "
                  "reuse it", markup=False, soft_wrap=True)
    return train_teacher(data_root, folder, budget_name, backbone, seed=seed), True
