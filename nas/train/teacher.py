"""The teacher: a large depth network trained once, whose depth maps are cached for every trial.

A teacher folder holds `teacher.json` (what the teacher is, what it was trained on, its own
validation metrics), the model (`teacher.pt`, a `DepthNet` state dict made by `train_teacher`, or a
user's TorchScript / ONNX file) and `cache/`, the teacher's depth on the training split at one or
more student training resolutions.

Staleness is decided by fingerprints, not by trust:
- the data fingerprint hashes, per file of a split, its stem, suffix, size and mtime (nanoseconds).
  It is cheap on 8k images and notices a touched, replaced, added or removed file; copying a data set
  (new mtimes) costs one rebuild, which is the safe side.
- the teacher fingerprint is the sha256 of the model file, so a retrained or swapped teacher never
  reuses another teacher's maps.
- a cache file is keyed by sha256(data fingerprint, teacher fingerprint, resolution).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..arch import Arch, ArchError
from ..config import Budget
from ..data.dataset import DepthSplit, load_rgb, load_split
from ..data.layout import list_pairs
from ..errors import ConfigError
from ..metrics import METRIC_NAMES, all_metrics
from ..models import DepthNet, count_params
from .loop import default_device, train

console = Console(stderr=True)

SPEC_FILE = "teacher.json"
WEIGHTS_FILE = "teacher.pt"
CACHE_DIR = "cache"
LOCK_FILE = ".lock"
TeacherKind = Literal["depthnet", "torchscript", "onnx"]

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


class TeacherSpec(BaseModel):
    """Contents of teacher.json: enough to load the teacher and to tell whether anything is stale."""

    model_config = ConfigDict(extra="ignore")
    kind: TeacherKind
    model_file: str  # relative to the teacher folder
    model_sha256: str
    arch: dict[str, Any] | None = None  # depthnet only
    budget: dict[str, Any] | None = None  # depthnet only: the teacher budget it was trained with
    input_hw: tuple[int, int] | None = None  # resolution the teacher runs at (None: the cache resolution)
    data_root: str | None = None
    data_fingerprint: str | None = None  # train + validation it was trained on (depthnet only)
    init: str | None = None  # local checkpoint it started from
    seed: int | None = None
    params: int | None = None
    train_seconds: float | None = None
    val_metrics: dict[str, float] | None = None  # mean MAI metrics over validation at input_hw
    created: str | None = None

    @property
    def label(self) -> str:
        """Short description for trial records: kind and backbone, or kind and model file."""
        if self.kind == "depthnet" and self.arch:
            return f"depthnet/{self.arch['backbone']}"
        return f"{self.kind}/{self.model_file}"


@dataclass
class TeacherCache:
    """The teacher's depth (metres, float16) on a training split at one resolution."""

    maps: np.ndarray  # (N, H, W), memory-mapped from the cache file
    stems: list[str]
    fingerprint: str
    path: Path
    rebuilt: bool
    val_metrics: dict[str, float]


# -- fingerprints -------------------------------------------------------------------------------


def file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def data_fingerprint(root: Path, splits: tuple[str, ...] = ("train",)) -> str:
    """sha256 over (split, stem, suffixes, sizes, mtimes) of every RGB/depth pair of `splits`."""
    digest = hashlib.sha256()
    root = Path(root)
    for split in splits:
        pairs = list_pairs(root, split)
        if not pairs:
            raise ConfigError(root / split, "no RGB/depth pairs (expected rgb/ and depth/ with shared stems)")
        for rgb, depth in pairs:
            a, b = rgb.stat(), depth.stat()
            digest.update(f"{split}/{rgb.stem}|{rgb.suffix}|{a.st_size}|{a.st_mtime_ns}|{depth.suffix}|"
                          f"{b.st_size}|{b.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def cache_fingerprint(data_fp: str, teacher_sha: str, height: int, width: int) -> str:
    return hashlib.sha256(f"{data_fp}|{teacher_sha}|{height}x{width}".encode()).hexdigest()


# -- small file helpers -------------------------------------------------------------------------


def _atomic_write_text(path: Path, text: str) -> None:
    """Write beside, then rename: a killed worker never leaves half a teacher.json."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def read_spec(folder: Path) -> TeacherSpec | None:
    path = Path(folder) / SPEC_FILE
    if not path.is_file():
        return None
    try:
        return TeacherSpec.model_validate_json(path.read_text())
    except ValueError as exc:
        raise ConfigError(path, f"not a teacher description ({str(exc).splitlines()[0]})") from None


def write_spec(folder: Path, spec: TeacherSpec) -> None:
    _atomic_write_text(Path(folder) / SPEC_FILE, spec.model_dump_json(indent=2))


def folder_lock(folder: Path, timeout: float = -1):
    """Inter-process lock on a teacher folder, so two workers never train or cache the same teacher twice."""
    from filelock import FileLock

    Path(folder).mkdir(parents=True, exist_ok=True)
    return FileLock(str(Path(folder) / LOCK_FILE), timeout=timeout)


def _progress(label: str) -> Progress:
    return Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                    TimeElapsedColumn(), console=console, transient=True)


# -- teacher models -----------------------------------------------------------------------------


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


class Predictor:
    """Teacher depth in metres for uint8 RGB (N, H, W, 3), whatever the teacher's format."""

    def __init__(self, spec: TeacherSpec, folder: Path, device: torch.device | None = None):
        self.spec = spec
        self.device = device or default_device()
        path = Path(folder) / spec.model_file
        if not path.is_file():
            raise ConfigError(path, "teacher model file is missing")
        self.fixed_hw: tuple[int, int] | None = None
        self.fixed_batch: int | None = None
        if spec.kind == "depthnet":
            self.model = DepthNet(Arch.from_dict(spec.arch))
            self.model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            self.model.to(self.device).eval()
        elif spec.kind == "torchscript":
            self.model = torch.jit.load(str(path), map_location=self.device).eval()
        else:
            import onnxruntime as ort

            self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            shape = self.session.get_inputs()[0].shape
            if len(shape) != 4:
                raise ConfigError(path, f"ONNX input has shape {shape}; expected (N, 3, H, W)")
            if isinstance(shape[2], int) and isinstance(shape[3], int):
                self.fixed_hw = (shape[2], shape[3])
            if isinstance(shape[0], int):
                self.fixed_batch = shape[0]

    @torch.no_grad()
    def __call__(self, rgb: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
        """(N, H, W, 3) uint8 -> (N, out_h, out_w) float32 metres; resized bilinearly where sizes differ."""
        image = torch.from_numpy(np.ascontiguousarray(rgb)).permute(0, 3, 1, 2).float()
        if self.fixed_hw and tuple(image.shape[2:]) != self.fixed_hw:
            image = F.interpolate(image, size=self.fixed_hw, mode="bilinear", align_corners=False)
        if self.spec.kind == "onnx":
            name = self.session.get_inputs()[0].name
            chunks = [image[i:i + 1] for i in range(len(image))] if self.fixed_batch == 1 else [image]
            depth = torch.cat([torch.from_numpy(np.asarray(self.session.run(None, {name: c.numpy()})[0]))
                               for c in chunks])
        else:
            depth = self.model(image.to(self.device)).float().cpu()
        if depth.ndim == 3:
            depth = depth.unsqueeze(1)
        if depth.ndim != 4 or depth.shape[1] != 1 or depth.shape[0] != len(rgb):
            raise ConfigError(self.spec.model_file, f"teacher output has shape {tuple(depth.shape)}; "
                                                    "expected (N, 1, H, W) depth in metres")
        if tuple(depth.shape[2:]) != tuple(out_hw):
            depth = F.interpolate(depth, size=tuple(out_hw), mode="bilinear", align_corners=False)
        return depth[:, 0].clamp_min(0).numpy()


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def evaluate_teacher(predict: Predictor, root: Path, hw: tuple[int, int], batch_size: int = 8,
                     limit: int | None = None) -> dict[str, float]:
    """Mean MAI metrics (nas.metrics) of the teacher on the validation split at (H, W)."""
    val = load_split(Path(root), "validation", (hw[1], hw[0]), limit)
    per_image: list[dict[str, float]] = []
    for start in range(0, len(val), batch_size):
        pred = predict(val.rgb[start:start + batch_size], hw) * 1000.0
        for p, gt in zip(pred, val.depth_mm[start:start + batch_size]):
            if (gt > 1).any():
                per_image.append(all_metrics(p, gt))
    return {name: float(np.mean([m[name] for m in per_image])) for name in METRIC_NAMES} if per_image else {}


# -- training -----------------------------------------------------------------------------------


def teacher_budget(name: str, steps: int | None = None) -> Budget:
    if name not in TEACHER_BUDGETS:
        raise ConfigError(None, f"unknown teacher budget {name!r}; choose from {', '.join(TEACHER_BUDGETS)}")
    budget = TEACHER_BUDGETS[name]
    return budget.model_copy(update={"steps": steps}) if steps else budget


def train_teacher(data_root: Path, out: Path, budget_name: str = "quick", backbone: str | None = None,
                  init: Path | None = None, steps: int | None = None, seed: int = 0,
                  device: torch.device | None = None) -> TeacherSpec:
    """Train a DepthNet teacher on `data_root` and write teacher.pt + teacher.json into `out`."""
    budget = teacher_budget(budget_name, steps)
    backbone = backbone or DEFAULT_BACKBONES[budget_name]
    data_root, out = Path(data_root), Path(out)
    data_fp = data_fingerprint(data_root, ("train", "validation"))
    try:
        arch = teacher_arch(backbone)
        model = DepthNet(arch)
    except ArchError as exc:
        raise ConfigError(None, f"teacher backbone: {exc}") from None
    init_note = load_init(model, Path(init)) if init else None
    hw = (budget.train_height, budget.train_width)
    with console.status(f"loading training data at {hw[1]}×{hw[0]}"):
        train_split = load_split(data_root, "train", (hw[1], hw[0]), budget.train_limit)
        val_split = load_split(data_root, "validation", (hw[1], hw[0]), budget.val_limit)
    device = device or default_device()
    console.print(f"training teacher {backbone} ({count_params(model) / 1e6:.1f} M params) for {budget.steps} steps "
                  f"at {hw[1]}×{hw[0]} on {device}" + (f", initialised from {init} ({init_note})" if init else ""))
    progress = _progress("teacher training")
    task = progress.add_task("train", total=budget.steps, info="")

    def report(step: int, val_si_rmse: float) -> bool:
        progress.console.print(f"  teacher step {step}: validation si-RMSE {val_si_rmse:.4f}")
        return False  # never stop early: the teacher gets its whole budget

    def advance(step: int, total: int, loss: float) -> None:
        progress.update(task, completed=step, info=f"loss {loss:.3f}")

    with progress:
        result = train(model, train_split, budget, val_split=val_split, seed=seed, device=device, on_eval=report,
                       progress=advance)
    out.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out, prefix=".teacher", suffix=".pt")
    os.close(fd)
    torch.save(model.cpu().state_dict(), tmp)
    os.replace(tmp, out / WEIGHTS_FILE)
    spec = TeacherSpec(kind="depthnet", model_file=WEIGHTS_FILE, model_sha256=file_sha256(out / WEIGHTS_FILE),
                       arch=arch.to_dict(), budget=budget.model_dump(), input_hw=hw, data_root=str(data_root.resolve()),
                       data_fingerprint=data_fp, init=str(init) if init else None, seed=seed,
                       params=count_params(model), train_seconds=round(result.seconds, 1),
                       created=datetime.now(timezone.utc).isoformat())
    spec.val_metrics = evaluate_teacher(Predictor(spec, out, device), data_root, hw, limit=budget.val_limit)
    write_spec(out, spec)
    console.print(f"teacher written to {out}: {result.steps} steps in {result.seconds:.0f} s, "
                  f"{_metrics_line(spec.val_metrics)}")
    return spec


def _metrics_line(metrics: dict[str, float] | None) -> str:
    if not metrics:
        return "no validation metrics"
    return f"validation si-RMSE {metrics['si_rmse']:.4f}, RMSE {metrics['rmse']:.3f} m"


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
        if same_recipe and same_data and file_sha256(Path(folder) / spec.model_file) == spec.model_sha256:
            return spec, False
        why = "the data set changed" if same_recipe else "the teacher recipe changed"
        console.print(f"teacher in {folder} is stale ({why}); training it again")
    return train_teacher(data_root, folder, budget_name, backbone, seed=seed), True


# -- a user's own teacher -----------------------------------------------------------------------


def register_model(model: Path, out: Path, probe_hw: tuple[int, int] = (96, 128)) -> TeacherSpec:
    """Make `out` a teacher folder for a user's TorchScript or ONNX file (copied in, probed once)."""
    model, out = Path(model), Path(out)
    if not model.is_file():
        raise ConfigError(model, "teacher model file does not exist")
    kind: TeacherKind
    if model.suffix.lower() == ".onnx":
        kind = "onnx"
    else:
        try:
            torch.jit.load(str(model), map_location="cpu")
        except Exception:  # torch raises several types for a non-TorchScript file
            raise ConfigError(model, "neither an ONNX (.onnx) nor a TorchScript file") from None
        kind = "torchscript"
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"model{'.onnx' if kind == 'onnx' else '.pt'}"
    if not target.exists() or not target.samefile(model):
        shutil.copyfile(model, target)
    spec = TeacherSpec(kind=kind, model_file=target.name, model_sha256=file_sha256(target),
                       created=datetime.now(timezone.utc).isoformat())
    try:
        probe = Predictor(spec, out, torch.device("cpu"))(np.full((1, *probe_hw, 3), 128, np.uint8), probe_hw)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(model, f"teacher model fails on a (1, 3, {probe_hw[0]}, {probe_hw[1]}) float image: "
                                 f"{type(exc).__name__}: {exc}") from None
    if not np.isfinite(probe).all():
        raise ConfigError(model, "teacher model outputs non-finite depth")
    write_spec(out, spec)
    return spec


def resolve_teacher(folder: Path) -> TeacherSpec:
    """The teacher of a folder: its teacher.json, or the single .onnx / TorchScript file it holds."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(folder, "teacher folder does not exist")
    spec = read_spec(folder)
    if spec is not None:
        return spec
    models = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".onnx", ".pt", ".ts", ".torchscript"))
    if len(models) != 1:
        raise ConfigError(folder, "no teacher.json, and not exactly one .onnx/.pt/.ts model file to use; make one "
                                  "with `nas teacher train` or `nas teacher cache --model FILE`")
    return register_model(models[0], folder)


# -- the cache ----------------------------------------------------------------------------------


def _cache_paths(folder: Path, height: int, width: int, fingerprint: str) -> tuple[Path, Path]:
    base = Path(folder) / CACHE_DIR / f"train-{height}x{width}-{fingerprint[:16]}"
    return base.with_suffix(".npy"), base.with_suffix(".json")


def ensure_cache(folder: Path, data_root: Path, height: int, width: int, spec: TeacherSpec | None = None,
                 device: torch.device | None = None) -> TeacherCache:
    """Teacher depth on every training image at (height, width): reused when fresh, else rebuilt.

    Callers hold `folder_lock(folder)`. Stale files of the same resolution are deleted.
    """
    folder, data_root = Path(folder), Path(data_root)
    spec = spec or resolve_teacher(folder)
    data_fp = data_fingerprint(data_root, ("train",))
    fingerprint = cache_fingerprint(data_fp, spec.model_sha256, height, width)
    npy, meta_path = _cache_paths(folder, height, width, fingerprint)
    if npy.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("fingerprint") == fingerprint:
            maps = np.load(npy, mmap_mode="r")
            return TeacherCache(maps, meta["stems"], fingerprint, npy, False, meta.get("val_metrics", {}))
    if file_sha256(folder / spec.model_file) != spec.model_sha256:
        raise ConfigError(folder / spec.model_file, "model file differs from the sha256 in teacher.json; "
                                                    "train or register the teacher again")
    predict = Predictor(spec, folder, device)
    run_hw = tuple(spec.input_hw) if spec.input_hw else (height, width)
    pairs = list_pairs(data_root, "train")
    npy.parent.mkdir(parents=True, exist_ok=True)
    tmp = npy.with_name(f".{npy.stem}.{os.getpid()}.tmp.npy")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(len(pairs), height, width))
    start = time.perf_counter()
    progress = _progress(f"teacher depth at {width}×{height}")
    task = progress.add_task("cache", total=len(pairs), info="")
    with progress:
        done = 0
        for chunk in _chunks(pairs, 8):
            rgb = np.stack([load_rgb(r, (run_hw[1], run_hw[0])) for r, _ in chunk])
            out[done:done + len(chunk)] = predict(rgb, (height, width)).astype(np.float16)
            done += len(chunk)
            progress.update(task, completed=done)
    out.flush()
    del out
    os.replace(tmp, npy)
    with console.status("teacher validation metrics"):
        val_metrics = evaluate_teacher(predict, data_root, (height, width))
    meta = {"fingerprint": fingerprint, "data_fingerprint": data_fp, "teacher_sha256": spec.model_sha256,
            "teacher": spec.label, "resolution": [height, width], "teacher_input_hw": list(run_hw),
            "data_root": str(data_root.resolve()), "stems": [r.stem for r, _ in pairs], "val_metrics": val_metrics,
            "seconds": round(time.perf_counter() - start, 1), "created": datetime.now(timezone.utc).isoformat()}
    _atomic_write_text(meta_path, json.dumps(meta, indent=1))
    for old in npy.parent.glob(f"train-{height}x{width}-*"):
        if old not in (npy, meta_path):
            old.unlink(missing_ok=True)
    console.print(f"teacher {spec.label}: cached depth of {len(pairs)} training images at {width}×{height} "
                  f"in {meta['seconds']:.0f} s; {_metrics_line(val_metrics)} (at {width}×{height})")
    return TeacherCache(np.load(npy, mmap_mode="r"), meta["stems"], fingerprint, npy, True, val_metrics)


def align_to_split(cache: TeacherCache, split: DepthSplit) -> np.ndarray:
    """Rows of the cache in the order of `split.stems` (a memory-mapped view when they are a prefix)."""
    if cache.stems[:len(split)] == split.stems:
        return cache.maps[:len(split)]
    index = {stem: i for i, stem in enumerate(cache.stems)}
    if missing := [s for s in split.stems if s not in index]:
        raise ConfigError(cache.path, f"teacher cache lacks training image(s) {missing[:3]}")
    return np.asarray(cache.maps[[index[s] for s in split.stems]])


def cache_teacher(folder: Path, data_root: Path, height: int, width: int,
                  model: Path | None = None) -> tuple[TeacherCache, TeacherSpec]:
    """`nas teacher cache`: register `model` into `folder` when given, then make the cache fresh."""
    if model is None and not Path(folder).is_dir():
        raise ConfigError(folder, "teacher folder does not exist (pass --model FILE to make one)")
    with folder_lock(folder):
        if model is not None:
            spec = register_model(model, folder)
        else:
            spec = resolve_teacher(folder)
        return ensure_cache(folder, data_root, height, width, spec), spec
