"""DIODE (Dense Indoor and Outdoor DEpth) to the MAI layout.

DIODE's layout: `DIR/{train,val}/{indoors,outdoor}/scene_*/scan_*/NAME.png` with `NAME_depth.npy` (metres,
H×W×1 float) and `NAME_depth_mask.npy` (H×W, 1 where the depth is valid) beside it. Its `train` goes to
train and its `val` to validation; DIODE publishes no test ground truth, so the test split is empty unless
`--test N` carves one (seeded) from train. Masked pixels, and outdoor ranges beyond the maximum depth, are
written as 0 (unknown).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from nas.data.importers.writer import (MAX_DEPTH_M, Geometry, ImportPlan, Sample, carve_test, image_size,
                                      sha256_listing)
from nas.errors import ConfigError

PARTS = {"indoor": ("indoors",), "outdoor": ("outdoor",), "both": ("indoors", "outdoor")}
SPLIT_OF = {"train": "train", "val": "validation"}


def _npy_shape(path: Path) -> tuple[int, ...]:
    """Shape from the .npy header, without reading the array."""
    if not path.is_file():
        raise ConfigError(path, "file is missing; DIODE keeps NAME_depth.npy and NAME_depth_mask.npy beside NAME.png")
    try:
        return np.load(path, mmap_mode="r").shape
    except (ValueError, OSError) as exc:
        raise ConfigError(path, f"not a NumPy .npy file ({exc})") from exc


def plan_diode(root: Path, part: Literal["indoor", "outdoor", "both"] = "both", test: int = 0, seed: int = 0,
               geometry: Geometry | None = None, max_depth_m: float = MAX_DEPTH_M) -> ImportPlan:
    """The import of a DIODE folder, every file's header checked (ConfigError) before any pixel is read."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(root, "folder does not exist")
    if part not in PARTS:
        raise ConfigError(None, f"--part {part!r}: expected indoor, outdoor or both")
    found: dict[str, list[Path]] = {}
    for name in SPLIT_OF:
        for kind in PARTS[part]:
            found.setdefault(name, []).extend(
                p for p in sorted((root / name / kind).glob("scene_*/scan_*/*.png")) if not p.name.startswith("."))
    if not any(found.values()):
        raise ConfigError(root, f"no DIODE images found; expected {root}/{{train,val}}/"
                                f"{{{','.join(PARTS[part])}}}/scene_*/scan_*/NAME.png")
    samples: list[Sample] = []
    read_files: list[Path] = []
    for name, images in found.items():
        for image in images:
            depth = image.with_name(f"{image.stem}_depth.npy")
            mask = image.with_name(f"{image.stem}_depth_mask.npy")
            width, height = image_size(image)
            depth_shape, mask_shape = _npy_shape(depth), _npy_shape(mask)
            if depth_shape not in ((height, width, 1), (height, width)):
                raise ConfigError(depth, f"depth is {depth_shape}, its image {width}×{height}; expected "
                                         f"({height}, {width}, 1)")
            if mask_shape not in ((height, width), (height, width, 1)):
                raise ConfigError(mask, f"mask is {mask_shape}, its image {width}×{height}; expected ({height}, {width})")
            samples.append(Sample(stem=image.stem, split=SPLIT_OF[name], size=(width, height), origin=image,
                                  read=_reader(image, depth, mask)))
            read_files += [image, depth, mask]
    samples = carve_test(samples, test, seed, root)
    return ImportPlan(source="diode", samples=samples,
                      inputs={"folder": str(root.resolve()), "listing_sha256": sha256_listing(root, read_files)},
                      options={"part": part, "test": test, "seed": seed}, geometry=geometry or Geometry(),
                      max_depth_m=max_depth_m)


def _reader(image: Path, depth: Path, mask: Path):
    def read() -> tuple[np.ndarray, np.ndarray]:
        with Image.open(image) as im:
            rgb = np.asarray(im.convert("RGB"))
        metres = np.load(depth).astype(np.float64).reshape(rgb.shape[:2])
        valid = np.load(mask).reshape(rgb.shape[:2]) > 0
        return rgb, np.where(valid, metres, 0.0)

    return read
