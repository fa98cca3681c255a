"""Plain folders of pairs: an RGB folder and a depth folder whose files share a stem, to the MAI layout.

RGB: .png, .jpg, .jpeg. Depth: single-channel PNG (8 or 16 bit), `.npy` (H×W or H×W×1) or TIFF (float or
integer). A depth value means `value × --depth-scale` in `--depth-unit`; 0, negative, NaN, inf and values
beyond `--max-depth` metres are written as 0 (unknown). Every file's header is checked before any write, and
the split (validation and test fractions) is seeded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from nas.data.importers.writer import (MAX_DEPTH_M, Geometry, ImportPlan, Sample, carve, fraction_counts, image_size,
                                       sha256_listing)
from nas.errors import ConfigError

RGB_SUFFIXES = (".png", ".jpg", ".jpeg")
DEPTH_SUFFIXES = (".png", ".npy", ".tif", ".tiff")
UNIT_METRES = {"mm": 0.001, "cm": 0.01, "m": 1.0}
DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "L", "F")


def _listing(folder: Path, suffixes: tuple[str, ...], what: str) -> dict[str, Path]:
    """Files of `folder` by stem; ConfigError for two files of one stem (a.png and a.jpg: which one?)."""
    if not folder.is_dir():
        raise ConfigError(folder, f"{what} folder does not exist")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in suffixes and not path.name.startswith("."):
            if path.stem in found:
                raise ConfigError(path, f"two {what} files share the stem {path.stem!r} (the other: {found[path.stem].name})")
            found[path.stem] = path
    if not found:
        raise ConfigError(folder, f"holds no {what} file ({', '.join(suffixes)})")
    return found


def _depth_size(path: Path) -> tuple[int, int]:
    """(W, H) of a depth file from its header; ConfigError for a file that is no single-channel depth map."""
    if path.suffix.lower() == ".npy":
        try:
            array = np.load(path, mmap_mode="r")
        except (ValueError, OSError) as exc:
            raise ConfigError(path, f"not a NumPy .npy file ({exc})") from exc
        if array.ndim == 3 and array.shape[2] == 1:
            return array.shape[1], array.shape[0]
        if array.ndim != 2 or array.dtype.kind not in "iuf":
            raise ConfigError(path, f"depth array is {array.dtype} {array.shape}; expected numbers, H×W or H×W×1")
        return array.shape[1], array.shape[0]
    try:
        with Image.open(path) as im:
            mode, size = im.mode, im.size
    except OSError as exc:
        raise ConfigError(path, f"unreadable depth image ({exc})") from exc
    if mode not in DEPTH_MODES:
        raise ConfigError(path, f"depth image has mode {mode}; expected one channel (16-bit PNG, float TIFF)")
    return size


def plan_folder(rgb_dir: Path, depth_dir: Path, depth_unit: Literal["mm", "cm", "m"], depth_scale: float = 1.0,
                val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0,
                geometry: Geometry | None = None, max_depth_m: float = MAX_DEPTH_M) -> ImportPlan:
    """The import of two folders of pairs, every pair's headers checked (ConfigError) before any write."""
    rgb_dir, depth_dir = Path(rgb_dir), Path(depth_dir)
    if depth_unit not in UNIT_METRES:
        raise ConfigError(None, f"--depth-unit {depth_unit!r}: expected mm, cm or m")
    if not depth_scale > 0 or not np.isfinite(depth_scale):
        raise ConfigError(None, f"--depth-scale {depth_scale}: expected a positive factor")
    rgb, depth = _listing(rgb_dir, RGB_SUFFIXES, "RGB"), _listing(depth_dir, DEPTH_SUFFIXES, "depth")
    if extra := sorted(rgb.keys() - depth.keys()):
        raise ConfigError(rgb[extra[0]], f"has no depth file of the same stem in {depth_dir} ({len(rgb)} RGB vs "
                                         f"{len(depth)} depth file(s), {len(extra)} RGB without depth)")
    if extra := sorted(depth.keys() - rgb.keys()):
        raise ConfigError(depth[extra[0]], f"has no RGB file of the same stem in {rgb_dir} ({len(rgb)} RGB vs "
                                           f"{len(depth)} depth file(s), {len(extra)} depth without RGB)")
    stems = sorted(rgb)
    n_val, n_test = fraction_counts(len(stems), val_fraction, test_fraction, rgb_dir)
    split = carve(stems, {"validation": n_val, "test": n_test}, seed, rest="train")
    factor = depth_scale * UNIT_METRES[depth_unit]
    samples = []
    for stem in stems:
        size, depth_size = image_size(rgb[stem]), _depth_size(depth[stem])
        if size != depth_size:
            raise ConfigError(depth[stem], f"depth is {depth_size[0]}×{depth_size[1]} but its RGB image "
                                           f"{rgb[stem].name} {size[0]}×{size[1]}")
        samples.append(Sample(stem=stem, split=split[stem], size=size, origin=depth[stem],
                              read=_reader(rgb[stem], depth[stem], factor)))
    inputs = {"rgb": str(rgb_dir.resolve()), "rgb_listing_sha256": sha256_listing(rgb_dir, list(rgb.values())),
              "depth": str(depth_dir.resolve()), "depth_listing_sha256": sha256_listing(depth_dir, list(depth.values()))}
    options = {"depth_unit": depth_unit, "depth_scale": depth_scale, "val_fraction": val_fraction,
               "test_fraction": test_fraction, "seed": seed}
    return ImportPlan(source="folder", samples=samples, inputs=inputs, options=options,
                      geometry=geometry or Geometry(), max_depth_m=max_depth_m)


def read_depth(path: Path) -> np.ndarray:
    """The raw values of a depth file as float64 (H, W), in the file's own unit."""
    if path.suffix.lower() == ".npy":
        array = np.load(path)
        return array.reshape(array.shape[:2]).astype(np.float64)
    with Image.open(path) as im:
        return np.asarray(im).astype(np.float64)


def _reader(rgb: Path, depth: Path, factor: float):
    def read() -> tuple[np.ndarray, np.ndarray]:
        with Image.open(rgb) as im:
            image = np.asarray(im.convert("RGB"))
        return image, read_depth(depth) * factor

    return read
