"""What a teacher folder holds, and the fingerprints that decide whether its contents are stale.

- The data fingerprint hashes, per file of a split, its stem, suffix, size and mtime (nanoseconds).
  It is cheap on 8k images and notices a touched, replaced, added or removed file; copying a data set
  (new mtimes) costs one rebuild, which is the safe side.
- The teacher fingerprint is the sha256 of the model file (`TeacherSpec.model_sha256`), so a
  retrained or swapped teacher never reuses another teacher's maps.
- A cache file is keyed by sha256(data fingerprint, teacher fingerprint, resolution).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from filelock import FileLock
from pydantic import BaseModel, ConfigDict

from nas.data.layout import list_pairs, pair_stamps
from nas.errors import ConfigError
from nas.infra.files import atomic_write_text, remove_temporaries

SPEC_FILE = "teacher.json"
WEIGHTS_FILE = "teacher.pt"
CACHE_DIR = "cache"
LOCK_FILE = ".lock"
TeacherKind = Literal["depthnet", "torchscript", "onnx"]


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
    encoder_weights: dict[str, Any] | None = None  # the backbone's starting weights (WeightSource.record())
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


def data_fingerprint(root: Path, splits: tuple[str, ...] = ("train",)) -> str:
    """sha256 over (split, stem, suffixes, sizes, mtimes) of every RGB/depth pair of `splits`."""
    digest = hashlib.sha256()
    root = Path(root)
    for split in splits:
        pairs = list_pairs(root, split)
        if not pairs:
            raise ConfigError(root / split, "no RGB/depth pairs (expected rgb/ and depth/ with shared stems)")
        digest.update(pair_stamps(split, pairs).encode())
    return digest.hexdigest()


def cache_fingerprint(data_fp: str, teacher_sha: str, height: int, width: int) -> str:
    """The key of one cache file: which data, which teacher, which resolution."""
    return hashlib.sha256(f"{data_fp}|{teacher_sha}|{height}x{width}".encode()).hexdigest()


def read_spec(folder: Path) -> TeacherSpec | None:
    """The folder's teacher.json, or None when it has none."""
    path = Path(folder) / SPEC_FILE
    if not path.is_file():
        return None
    try:
        return TeacherSpec.model_validate_json(path.read_text())
    except ValueError as exc:
        raise ConfigError(path, f"not a teacher description ({str(exc).splitlines()[0]})") from None


def write_spec(folder: Path, spec: TeacherSpec) -> None:
    """Atomically: a killed worker never leaves half a teacher.json."""
    atomic_write_text(Path(folder) / SPEC_FILE, spec.model_dump_json(indent=2))


@contextmanager
def folder_lock(folder: Path, timeout: float = -1) -> Iterator[None]:
    """Inter-process lock on a teacher folder, so two workers never train or cache the same teacher twice.

    Every writer of the folder holds it, so on entry the temporaries of writers that were killed (their
    `finally` never ran) are deleted: nothing else can be writing them.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder / LOCK_FILE), timeout=timeout):
        remove_temporaries(folder)
        remove_temporaries(folder / CACHE_DIR)
        yield
