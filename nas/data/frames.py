"""A split at deployment resolution as memory-mapped arrays, decoded once and reused.

Training crops at the pixel scale the device will see (see `nas.train.batches`), so the images are
needed at full deployment resolution. The MAI 2021 set is about 13 GB decoded: far too much to hold
in memory per worker, cheap to keep on disk. Each split is decoded once into `.npy` files under the
results folder (keyed by the files' fingerprint and the resolution) and opened with `mmap_mode="r"`,
so a batch reads only the crops it uses and several workers share the operating system's page cache.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from filelock import FileLock

from nas.infra.files import atomic_write_text

from nas.data.dataset import DepthSplit, load_depth_mm, load_rgb
from nas.data.layout import list_pairs, pair_stamps


def decoded_bytes(count: int, width: int, height: int) -> int:
    """Disk taken by `count` decoded pairs: 3 bytes of RGB and 2 of depth per pixel."""
    return count * width * height * 5


def open_split(root: Path, split: str, cache_dir: Path, size_wh: tuple[int, int], limit: int | None = None,
               progress: Callable[[int, int], None] | None = None) -> DepthSplit:
    """`split` of the data set at `size_wh` (W, H), memory-mapped; decoded into `cache_dir` on first use."""
    pairs = list_pairs(Path(root), split)[:limit]
    if not pairs:
        raise FileNotFoundError(f"{Path(root) / split}: no RGB/depth pairs")
    width, height = size_wh
    key = hashlib.sha256(f"{pair_stamps(split, pairs)}|{width}x{height}".encode()).hexdigest()[:16]
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    base = cache_dir / f"{split}-{width}x{height}-{key}"
    rgb_path, depth_path, meta_path = (base.with_name(base.name + s) for s in (".rgb.npy", ".depth.npy", ".json"))
    with FileLock(str(cache_dir / ".lock")):  # one worker decodes, the others wait and reuse
        if not meta_path.is_file():
            _decode(pairs, size_wh, rgb_path, depth_path, progress)
            for stale in cache_dir.glob(f"{split}-{width}x{height}-*"):
                if not stale.name.startswith(base.name):
                    stale.unlink(missing_ok=True)
            atomic_write_text(meta_path, json.dumps({"root": str(Path(root).resolve()), "split": split,
                                                     "stems": [r.stem for r, _ in pairs]}))
    stems = json.loads(meta_path.read_text())["stems"]
    return DepthSplit(np.load(rgb_path, mmap_mode="r"), np.load(depth_path, mmap_mode="r"), stems)


def _decode(pairs: list[tuple[Path, Path]], size_wh: tuple[int, int], rgb_path: Path, depth_path: Path,
            progress: Callable[[int, int], None] | None) -> None:
    """Write both arrays through temporary names, so an interrupted decode never looks complete."""
    width, height = size_wh
    tmp_rgb = rgb_path.with_name(f"tmp-{os.getpid()}-{rgb_path.name}")
    tmp_depth = depth_path.with_name(f"tmp-{os.getpid()}-{depth_path.name}")
    try:
        rgb = np.lib.format.open_memmap(tmp_rgb, mode="w+", dtype=np.uint8, shape=(len(pairs), height, width, 3))
        depth = np.lib.format.open_memmap(tmp_depth, mode="w+", dtype=np.uint16, shape=(len(pairs), height, width))
        for i, (rgb_file, depth_file) in enumerate(pairs):
            rgb[i] = load_rgb(rgb_file, size_wh)
            depth[i] = load_depth_mm(depth_file, size_wh)
            if progress:
                progress(i + 1, len(pairs))
        rgb.flush()
        depth.flush()
        del rgb, depth
        os.replace(tmp_rgb, rgb_path)
        os.replace(tmp_depth, depth_path)
    finally:
        tmp_rgb.unlink(missing_ok=True)
        tmp_depth.unlink(missing_ok=True)
