"""The teacher's depth on the training split, computed once per (data, teacher, resolution).

Files live in `<teacher folder>/cache/`: `train-HxW-<fingerprint>.npy` (float16 metres, memory-mapped
by every trial) beside a `.json` with the stems, fingerprints and the teacher's validation metrics.
The file is written with plain writes after a free-space check (a memory map on a full disk ends the
process with SIGBUS), under a hidden temporary name that `folder_lock` clears if a writer was killed.
"""

from __future__ import annotations

import errno
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from nas.infra.console import err
from nas.data.dataset import DepthSplit, load_rgb
from nas.data.layout import list_pairs
from nas.errors import ConfigError, TeacherError
from nas.infra.files import atomic_path, atomic_write_text, require_free_space, sha256_file
from nas.teacher.predictors import Predictor, evaluate_teacher
from nas.teacher.progress import metrics_line, progress_bar
from nas.teacher.register import register_model, resolve_teacher
from nas.teacher.spec import CACHE_DIR, TeacherSpec, cache_fingerprint, data_fingerprint, folder_lock


@dataclass
class TeacherCache:
    """The teacher's depth (metres, float16) on a training split at one resolution."""

    maps: np.ndarray  # (N, H, W), memory-mapped from the cache file
    stems: list[str]
    fingerprint: str
    path: Path
    rebuilt: bool
    val_metrics: dict[str, float]


def _cache_paths(folder: Path, height: int, width: int, fingerprint: str) -> tuple[Path, Path]:
    base = Path(folder) / CACHE_DIR / f"train-{height}x{width}-{fingerprint[:16]}"
    return base.with_suffix(".npy"), base.with_suffix(".json")


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


HEADER_BYTES = 4096  # more than any .npy header of a 3-D array


def _write(out: BinaryIO, maps: np.ndarray, folder: Path) -> None:
    """Append maps to the open cache file; a full disk is a TeacherError naming the folder."""
    try:
        out.write(np.ascontiguousarray(maps).tobytes())
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise TeacherError(folder, f"disk full while writing the teacher's depth cache ({exc.strerror}); "
                                       "free some space or use a teacher folder on another disk") from None
        raise


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
    if sha256_file(folder / spec.model_file) != spec.model_sha256:
        raise ConfigError(folder / spec.model_file, "model file differs from the sha256 in teacher.json; "
                                                    "train or register the teacher again")
    predict = Predictor(spec, folder, device)
    run_hw = tuple(spec.input_hw) if spec.input_hw else (height, width)
    pairs = list_pairs(data_root, "train")
    npy.parent.mkdir(parents=True, exist_ok=True)
    shape = (len(pairs), height, width)
    require_free_space(npy.parent, HEADER_BYTES + int(np.prod(shape)) * 2, "the teacher's depth cache")
    start = time.perf_counter()
    progress = progress_bar(f"teacher depth at {width}×{height}")
    task = progress.add_task("cache", total=len(pairs), info="")
    with atomic_path(npy) as tmp, open(tmp, "wb") as out, progress:
        # Plain writes, not a memory map: a disk that fills up meanwhile is an OSError here, not SIGBUS.
        np.lib.format.write_array_header_1_0(out, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float16)),
                                                   "fortran_order": False, "shape": shape})
        done = 0
        for chunk in _chunks(pairs, 8):
            rgb = np.stack([load_rgb(r, (run_hw[1], run_hw[0])) for r, _ in chunk])
            _write(out, predict(rgb, (height, width)).astype(np.float16), npy.parent)
            done += len(chunk)
            progress.update(task, completed=done)
    with err.status("teacher validation metrics"):
        val_metrics = evaluate_teacher(predict, data_root, (height, width))
    meta = {"fingerprint": fingerprint, "data_fingerprint": data_fp, "teacher_sha256": spec.model_sha256,
            "teacher": spec.label, "resolution": [height, width], "teacher_input_hw": list(run_hw),
            "data_root": str(data_root.resolve()), "stems": [r.stem for r, _ in pairs], "val_metrics": val_metrics,
            "seconds": round(time.perf_counter() - start, 1), "created": datetime.now(timezone.utc).isoformat()}
    atomic_write_text(meta_path, json.dumps(meta, indent=1))
    for old in npy.parent.glob(f"train-{height}x{width}-*"):
        if old not in (npy, meta_path):
            old.unlink(missing_ok=True)
    err.print(f"teacher {spec.label}: cached depth of {len(pairs)} training images at {width}×{height} "
              f"in {meta['seconds']:.0f} s; {metrics_line(val_metrics)} (at {width}×{height})")
    return TeacherCache(np.load(npy, mmap_mode="r"), meta["stems"], fingerprint, npy, True, val_metrics)


def align_to_split(cache: TeacherCache, split: DepthSplit) -> np.ndarray:
    """Rows of the cache in the order of `split.stems` (a memory-mapped view when they are a prefix)."""
    if cache.stems[:len(split)] == split.stems:
        return cache.maps[:len(split)]
    index = {stem: i for i, stem in enumerate(cache.stems)}
    if missing := [s for s in split.stems if s not in index]:
        raise TeacherError(cache.path, f"teacher cache lacks training image(s) {missing[:3]}")
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
