"""Running a teacher, whatever its kind: the own DepthNet, a user's TorchScript or ONNX file.

Each kind registers a loader in `TEACHER_KINDS`; `Predictor` does what all kinds share (uint8 RGB
in, resizing to a fixed-shape model and back, output checks, metres out), so a new kind is one
loader and one entry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from nas.arch import Arch
from nas.data.dataset import load_split
from nas.errors import ConfigError, TeacherError
from nas.metrics import mean_metrics
from nas.models import DepthNet
from nas.train.loop import default_device
from nas.teacher.spec import TeacherKind, TeacherSpec


@dataclass
class Runner:
    """A loaded teacher model: float RGB 0..255 (N, 3, H, W) on the CPU -> depth tensor on the CPU."""

    forward: Callable[[torch.Tensor], torch.Tensor]
    fixed_hw: tuple[int, int] | None = None  # the only input size the model accepts (fixed-shape ONNX)


def _torch_runner(model: torch.nn.Module, device: torch.device) -> Runner:
    return Runner(lambda image: model(image.to(device)).float().cpu())


def _load_depthnet(spec: TeacherSpec, path: Path, device: torch.device) -> Runner:
    """A teacher from `train_teacher`: a DepthNet state dict and the arch in teacher.json."""
    model = DepthNet(Arch.from_dict(spec.arch))
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return _torch_runner(model.to(device).eval(), device)


def _load_torchscript(spec: TeacherSpec, path: Path, device: torch.device) -> Runner:
    return _torch_runner(torch.jit.load(str(path), map_location=device).eval(), device)


def _load_onnx(spec: TeacherSpec, path: Path, device: torch.device) -> Runner:
    """ONNX Runtime on the CPU; a model with a fixed batch of 1 gets one image at a time."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    shape = session.get_inputs()[0].shape
    if len(shape) != 4:
        raise ConfigError(path, f"ONNX input has shape {shape}; expected (N, 3, H, W)")
    fixed_hw = (shape[2], shape[3]) if isinstance(shape[2], int) and isinstance(shape[3], int) else None
    one_at_a_time = isinstance(shape[0], int) and shape[0] == 1

    def forward(image: torch.Tensor) -> torch.Tensor:
        name = session.get_inputs()[0].name
        chunks = [image[i:i + 1] for i in range(len(image))] if one_at_a_time else [image]
        return torch.cat([torch.from_numpy(np.asarray(session.run(None, {name: c.numpy()})[0])) for c in chunks])

    return Runner(forward, fixed_hw)


Loader = Callable[[TeacherSpec, Path, torch.device], Runner]
TEACHER_KINDS: dict[TeacherKind, Loader] = {
    "depthnet": _load_depthnet,
    "torchscript": _load_torchscript,
    "onnx": _load_onnx,
}


class Predictor:
    """Teacher depth in metres for uint8 RGB (N, H, W, 3), whatever the teacher's kind."""

    def __init__(self, spec: TeacherSpec, folder: Path, device: torch.device | None = None):
        self.spec = spec
        self.device = device or default_device()
        path = Path(folder) / spec.model_file
        if not path.is_file():
            raise ConfigError(path, "teacher model file is missing")
        self.runner = TEACHER_KINDS[spec.kind](spec, path, self.device)

    @torch.no_grad()
    def __call__(self, rgb: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
        """(N, H, W, 3) uint8 -> (N, out_h, out_w) float32 metres; resized bilinearly where sizes differ."""
        image = torch.from_numpy(np.ascontiguousarray(rgb)).permute(0, 3, 1, 2).float()
        fixed_hw = self.runner.fixed_hw
        if fixed_hw and tuple(image.shape[2:]) != fixed_hw:
            image = F.interpolate(image, size=fixed_hw, mode="bilinear", align_corners=False)
        depth = self.runner.forward(image)
        if depth.ndim == 3:
            depth = depth.unsqueeze(1)
        if depth.ndim != 4 or depth.shape[1] != 1 or depth.shape[0] != len(rgb):
            raise TeacherError(self.spec.model_file, f"teacher output has shape {tuple(depth.shape)}; "
                                                     "expected (N, 1, H, W) depth in metres")
        if tuple(depth.shape[2:]) != tuple(out_hw):
            depth = F.interpolate(depth, size=tuple(out_hw), mode="bilinear", align_corners=False)
        return depth[:, 0].clamp_min(0).numpy()


def evaluate_teacher(predict: Predictor, root: Path, hw: tuple[int, int], batch_size: int = 8,
                     limit: int | None = None) -> dict[str, float]:
    """Mean MAI metrics (nas.metrics) of the teacher on the validation split at (H, W)."""
    val = load_split(Path(root), "validation", (hw[1], hw[0]), limit)
    metrics, _ = mean_metrics(lambda rgb: predict(rgb, hw) * 1000.0, val.rgb, val.depth_mm, batch_size,
                              names=val.stems)
    return metrics
