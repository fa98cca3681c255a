"""A user's own teacher: a TorchScript or ONNX file made into a teacher folder, checked once."""

from __future__ import annotations

import shutil
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from nas.errors import ConfigError, TeacherError
from nas.infra.files import sha256_file
from nas.teacher.predictors import Predictor
from nas.teacher.spec import TeacherKind, TeacherSpec, read_spec, write_spec

MODEL_SUFFIXES = (".onnx", ".pt", ".ts", ".torchscript")  # what `resolve_teacher` takes as a lone model file


def _user_model_kind(model: Path) -> TeacherKind:
    """ONNX by its suffix; anything else must load as TorchScript."""
    if model.suffix.lower() == ".onnx":
        return "onnx"
    try:
        torch.jit.load(str(model), map_location="cpu")
    except Exception:  # torch raises several types for a non-TorchScript file
        raise ConfigError(model, "neither an ONNX (.onnx) nor a TorchScript file") from None
    return "torchscript"


def register_model(model: Path, out: Path, probe_hw: tuple[int, int] = (96, 128)) -> TeacherSpec:
    """Make `out` a teacher folder for a user's TorchScript or ONNX file (copied in, probed once)."""
    model, out = Path(model), Path(out)
    if not model.is_file():
        raise ConfigError(model, "teacher model file does not exist")
    kind = _user_model_kind(model)
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"model{'.onnx' if kind == 'onnx' else '.pt'}"
    if not target.exists() or not target.samefile(model):
        shutil.copyfile(model, target)
    spec = TeacherSpec(kind=kind, model_file=target.name, model_sha256=sha256_file(target),
                       created=datetime.now(timezone.utc).isoformat())
    try:
        probe = Predictor(spec, out, torch.device("cpu"))(np.full((1, *probe_hw, 3), 128, np.uint8), probe_hw)
    except ConfigError:
        raise
    except TeacherError as exc:  # here the probe is the check of the user's file: bad input
        raise ConfigError(exc.path, exc.message) from None
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
    # Hidden names are never a model: a writer's temporary, an editor's or macOS's (`._model.onnx`) files.
    models = sorted(p for p in folder.iterdir() if p.suffix.lower() in MODEL_SUFFIXES and not p.name.startswith("."))
    if len(models) != 1:
        raise ConfigError(folder, "no teacher.json, and not exactly one .onnx/.pt/.ts model file to use; make one "
                                  "with `nas teacher train` or `nas teacher cache --model FILE`")
    return register_model(models[0], folder)
