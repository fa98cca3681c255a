"""The teacher folder on a full disk and after a killed writer: a clear error, no leftovers, no wrong model."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from filelock import Timeout
from helpers.teacher import expected_maps, scripted_teacher, tiny_data

from nas.errors import NasRuntimeError
from nas.teacher import cache_teacher, folder_lock


def files_in(folder: Path) -> set[str]:
    return {p.name for p in folder.rglob("*") if p.is_file()}


def test_full_disk_is_an_error_naming_the_folder_before_anything_is_written(tmp_path: Path, monkeypatch) -> None:
    root = tiny_data(tmp_path / "data")
    folder = tmp_path / "teacher"
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda path: SimpleNamespace(total=10**9, used=10**9 - 1000, free=1000))
    with pytest.raises(NasRuntimeError, match=r"teacher's depth cache needs .* kB, only 1\.0 kB free") as caught:
        cache_teacher(folder, root, 48, 64, model=scripted_teacher(tmp_path / "tiny.pt"))
    assert caught.value.path == folder / "cache"
    assert not [name for name in files_in(folder) if name.endswith((".npy", ".tmp"))]
    monkeypatch.setattr(shutil, "disk_usage", real)
    cache, _ = cache_teacher(folder, root, 48, 64)  # space again: the same call now works
    assert cache.rebuilt and cache.maps.shape == (6, 48, 64)


def test_disk_filling_up_while_writing_is_an_error_not_a_crash(tmp_path: Path, monkeypatch) -> None:
    """A write that meets a full disk (ENOSPC) ends as a TeacherError; its temporary is removed."""
    import errno

    import nas.teacher.cache as cache_module

    root = tiny_data(tmp_path / "data")
    folder = tmp_path / "teacher"

    def full(out, maps, where):  # the real _write, on a disk that is full by now
        real_write(_FullFile(), maps, where)

    class _FullFile:
        def write(self, data: bytes) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    real_write = cache_module._write
    monkeypatch.setattr(cache_module, "_write", full)
    with pytest.raises(NasRuntimeError, match="disk full while writing the teacher's depth cache") as caught:
        cache_teacher(folder, root, 48, 64, model=scripted_teacher(tmp_path / "tiny.pt"))
    assert caught.value.path == folder / "cache"
    assert not [name for name in files_in(folder) if name.endswith((".npy", ".tmp"))]


def test_leftovers_of_killed_writers_are_removed_and_never_taken_for_the_model(tmp_path: Path) -> None:
    root = tiny_data(tmp_path / "data")
    folder = tmp_path / "teacher"
    (folder / "cache").mkdir(parents=True)
    scripted_teacher(folder / "model.pt")  # the user's one model file, no teacher.json yet
    leftovers = [folder / ".teacher.pt.4242.0badc0de.tmp", folder / ".teacher.json.4242.0badc0de.tmp",
                 folder / "cache" / ".train-48x64-0123456789abcdef.npy.4242.deadbeef.tmp"]
    for path in leftovers:
        path.write_bytes(b"half a file")
    hidden_model = folder / ".teacher.pt"  # a hidden model-like file: not the teacher either
    hidden_model.write_bytes(b"not a model")
    keep = folder / "notes.tmp"  # a user's file that merely ends in .tmp stays

    keep.write_text("mine")
    cache, spec = cache_teacher(folder, root, 48, 64)
    assert spec.model_file == "model.pt" and spec.kind == "torchscript"
    np.testing.assert_allclose(np.asarray(cache.maps, np.float32), expected_maps(root, (48, 64)), rtol=1e-3)
    assert not [p for p in leftovers if p.exists()]
    assert keep.exists() and hidden_model.exists()
    assert not [name for name in files_in(folder) if name.endswith(".tmp") and name != "notes.tmp"]


def test_the_lock_clears_leftovers_only_once_held(tmp_path: Path) -> None:
    folder = tmp_path / "teacher"
    folder.mkdir()
    leftover = folder / ".teacher.pt.77.0123abcd.tmp"
    leftover.write_bytes(b"x")
    with folder_lock(folder):
        assert not leftover.exists()
        mine = folder / ".teacher.pt.78.0123abcd.tmp"
        mine.write_bytes(b"being written")
        with pytest.raises(Timeout), folder_lock(folder, timeout=0):
            pass  # another worker cannot take the lock, so it never clears the live writer's file
        assert mine.exists()
