"""Training at the deployed pixel scale: the crop rule, crops taken at native resolution with the
teacher's matching window, and frames decoded once into memory-mapped arrays."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.disk import small_disk
from PIL import Image

from nas.data.dataset import DepthSplit
from nas.data.frames import open_split
from nas.data.synth import synthesize
from nas.models.depthnet import internal_size
from nas.train.batches import PixelScaleBatches, training_crop


@pytest.mark.parametrize("scale, crop", [("1", (120, 160)), ("0.5", (240, 320)), ("0.25", (480, 640)),
                                         ("128x160", (480, 640))])
def test_crop_rule_gives_every_candidate_the_budget_internal_size_at_deployed_pixel_scale(scale, crop):
    assert training_crop(scale, (120, 160), (480, 640)) == crop
    # Inside, the network resizes the crop exactly as it resizes the 640×480 frame on the device:
    trained_internal = internal_size(scale, *crop)
    deployed_internal = internal_size(scale, 480, 640)
    if "x" in scale:
        assert trained_internal == deployed_internal == (128, 160)
    else:
        assert trained_internal == (120, 160)  # equal cost per step for every ratio candidate
        assert crop[0] / trained_internal[0] == pytest.approx(480 / deployed_internal[0])  # same pixel scale


def test_crop_is_clipped_to_the_whole_frame():
    assert training_crop("0.25", (240, 320), (480, 640)) == (480, 640)
    assert training_crop("0.5", (240, 320), (480, 640)) == (480, 640)


def _coordinate_frames(n: int, h: int, w: int) -> DepthSplit:
    """Frames whose pixels encode their own coordinates, so any crop can be traced back."""
    rows, cols = np.mgrid[0:h, 0:w]
    rgb = np.zeros((n, h, w, 3), np.uint8)
    depth = np.zeros((n, h, w), np.uint16)
    for i in range(n):
        rgb[i, ..., 0] = cols % 256
        rgb[i, ..., 1] = rows % 256
        rgb[i, ..., 2] = i
        depth[i] = 1000 + 10 * rows + cols // 8 + 500 * i
    return DepthSplit(rgb, depth, [f"f{i}" for i in range(n)])


def test_crops_are_native_pixels_with_the_teachers_matching_window():
    n, h, w = 5, 96, 128
    frames = _coordinate_frames(n, h, w)
    # The teacher's cache covers whole frames at a quarter of the resolution: a smooth function of position.
    th, tw = h // 4, w // 4
    ty, tx = np.mgrid[0:th, 0:tw]
    teacher = np.stack([(1.0 + (ty + 0.5) * 4 / h + (tx + 0.5) * 4 / w + i).astype(np.float16) for i in range(n)])
    batches = PixelScaleBatches(frames, batch_size=4, crop_hw=(32, 48), teacher=teacher)
    flips = set()
    for seed in range(12):
        batch = batches(torch.Generator().manual_seed(seed))
        assert batch["image"].shape == (4, 3, 32, 48) and batch["teacher"].shape == (4, 1, 32, 48)
        for image, depth, teach in zip(batch["image"], batch["depth"][:, 0], batch["teacher"][:, 0]):
            cols, rows, index = image[0], image[1], int(image[2, 0, 0])
            flipped = bool(cols[0, 0] > cols[0, -1])
            flips.add(flipped)
            # Native resolution: neighbouring pixels are neighbouring source pixels (no zoom).
            step = -1 if flipped else 1
            assert torch.all(torch.diff(cols, dim=1) == step) and torch.all(torch.diff(rows, dim=0) == 1)
            expected_depth = (1000 + 10 * rows + torch.div(cols, 8, rounding_mode="floor") + 500 * index) / 1000.0
            assert torch.allclose(depth, expected_depth)
            # The teacher's window is the same place: its value says where each pixel came from.
            expected_teacher = 1.0 + (rows + 0.5) / h + (cols + 0.5) / w + index
            assert torch.allclose(teach, expected_teacher, atol=0.02)
    assert flips == {True, False}


def test_frames_are_decoded_once_and_redecoded_when_a_file_changes(tmp_path: Path):
    root = tmp_path / "data"
    synthesize(root, {"train": 3, "validation": 1}, seed=1, width=64, height=48)
    cache = tmp_path / "cache"
    split = open_split(root, "train", cache, (64, 48))
    assert isinstance(split.rgb, np.memmap) and split.rgb.shape == (3, 48, 64, 3)
    assert split.depth_mm.dtype == np.uint16 and split.stems == sorted(split.stems)
    first = np.asarray(Image.open(sorted((root / "train" / "rgb").iterdir())[0]).convert("RGB"))
    assert np.array_equal(split.rgb[0], first)
    files = sorted(p.name for p in cache.iterdir() if not p.name.startswith("."))
    stamps = {p: p.stat().st_mtime_ns for p in cache.iterdir()}
    again = open_split(root, "train", cache, (64, 48))
    assert {p: p.stat().st_mtime_ns for p in cache.iterdir()} == stamps  # reused, not rewritten
    assert np.array_equal(np.asarray(again.rgb), np.asarray(split.rgb))
    # Touch one depth map: the fingerprint changes, the split is decoded again, the stale files go.
    depth_file = next((root / "train" / "depth").iterdir())
    os.utime(depth_file, ns=(depth_file.stat().st_atime_ns, depth_file.stat().st_mtime_ns + 10_000))
    open_split(root, "train", cache, (64, 48))
    assert sorted(p.name for p in cache.iterdir() if not p.name.startswith(".")) != files
    assert len([p for p in cache.iterdir() if p.name.endswith(".rgb.npy")]) == 1


def decode_in_a_process(root: Path, cache: Path) -> subprocess.CompletedProcess:
    """`open_split` in a process of its own: on a full disk the old code died there of SIGBUS."""
    code = ("import sys; from nas.data.frames import open_split; from nas.errors import NasError\n"
            f"try: open_split({str(root)!r}, 'train', {str(cache)!r}, (320, 240))\n"
            "except NasError as exc: sys.exit(f'error: {exc}')")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})


def test_decoding_frames_onto_a_full_disk_is_one_line_and_orphans_of_dead_decoders_are_removed(tmp_path: Path):
    """A real 2 MB file system as the frame cache: 4 frames at 320×240 take 1.5 MB decoded."""
    root = tmp_path / "data"
    synthesize(root, {"train": 4}, seed=1, width=320, height=240)
    gone = subprocess.Popen(["true"])
    gone.wait()
    with small_disk(tmp_path / "cache", "2m") as cache:
        # A decoder that died (killed, or of SIGBUS) left 1 MB; one still running (this process) left a file too.
        orphan = cache / f"tmp-{gone.pid}-train-320x240-0123456789abcdef.rgb.npy"
        orphan.write_bytes(bytes(1_000_000))
        live = cache / f"tmp-{os.getpid()}-train-320x240-0123456789abcdef.depth.npy"
        live.write_bytes(b"x")
        done = decode_in_a_process(root, cache)
        assert done.returncode == 0, done.stderr  # the orphan's megabyte was freed for it
        assert not orphan.exists() and live.exists()
        live.unlink()
        assert len(list(cache.glob("train-320x240-*.npy"))) == 2

        # 8 frames (3.1 MB) cannot fit: one line naming the folder and the need, no crash, nothing left behind.
        synthesize(root, {"train": 8}, seed=2, width=320, height=240)
        done = decode_in_a_process(root, cache)
        assert done.returncode == 1, f"exit {done.returncode} (-7 is SIGBUS):\n{done.stderr}"
        (line,) = done.stderr.strip().splitlines()
        assert line.startswith(f"error: {cache}: decoding 8 train frames at 320×240 needs 3.1 MB, only ")
        assert not list(cache.glob("tmp-*")) and not list(cache.glob("train-*.npy"))
