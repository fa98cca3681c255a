"""A split at deployment resolution as memory-mapped arrays, decoded once and reused.

Training crops at the pixel scale the device will see (see `nas.train.batches`), so the images are
needed at full deployment resolution. The MAI 2021 set is about 13 GB decoded: far too much to hold
in memory per worker, cheap to keep on disk. Each split is decoded once into `.npy` files under the
results folder (keyed by the files' fingerprint and the resolution) and opened with `mmap_mode="r"`,
so a batch reads only the crops it uses and several workers share the operating system's page cache.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
from filelock import FileLock

from nas.infra.files import atomic_write_text, no_space, require_free_space

from nas.data.dataset import DepthSplit, load_depth_mm, load_rgb
from nas.data.layout import list_pairs, pair_stamps


def decoded_bytes(count: int, width: int, height: int) -> int:
    """Disk taken by `count` decoded pairs: 3 bytes of RGB and 2 of depth per pixel."""
    return count * width * height * 5


HEADER_BYTES = 2 * 4096  # the two `.npy` headers, generously
# The decoding temporaries `_decode` names, `tmp-PID-NAME`.
TEMPORARY = re.compile(r"^tmp-(\d+)-")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def remove_orphans(cache_dir: Path) -> list[Path]:
    """Delete the decoding temporaries of processes that are gone (killed, or ended by SIGBUS); the paths.

    Called under the cache folder's lock, which every decoder holds while it writes, so the files of a
    live decoder are never seen here; the pid check keeps those of a live process anyway.
    """
    removed = []
    for path in cache_dir.iterdir():
        if (match := TEMPORARY.match(path.name)) and path.is_file() and not _alive(int(match[1])):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


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
        remove_orphans(cache_dir)
        if not meta_path.is_file():
            for stale in cache_dir.glob(f"{split}-{width}x{height}-*"):  # an older decode: its space is needed
                if not stale.name.startswith(base.name):
                    stale.unlink(missing_ok=True)
            # Decoding writes through memory maps, where a full disk is SIGBUS (a `Bus error`, no message).
            require_free_space(cache_dir, decoded_bytes(len(pairs), width, height) + HEADER_BYTES,
                               f"decoding {len(pairs)} {split} frames at {width}×{height}")
            _decode(pairs, size_wh, rgb_path, depth_path, progress)
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
        _reserve(tmp_rgb, tmp_depth, what=f"decoding {len(pairs)} frames at {width}×{height}")
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


def _reserve(*paths: Path, what: str) -> None:
    """Allocate the (sparse) files' blocks now, so that space taken meanwhile by another process is an
    ENOSPC here, with a message, rather than a SIGBUS on some later page of the map."""
    for path in paths:
        fd = os.open(path, os.O_RDWR)
        try:
            os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise no_space(path.parent, sum(p.stat().st_size for p in paths), what) from None
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # a file system without fallocate: as before
                raise
        finally:
            os.close(fd)
