"""KITTI depth completion (the annotated, sparse depth) with its raw RGB frames to the MAI layout.

Annotations, as `data_depth_annotated.zip` unpacks:
`DIR/{train,val}/<drive>/proj_depth/groundtruth/image_0{2,3}/NNNNNNNNNN.png`, 16-bit PNGs where
value / 256 is metres and 0 means no measurement. The RGB frame of each is KITTI raw's
`RGB_ROOT/<date>/<drive>/image_0{2,3}/data/NNNNNNNNNN.png` (`<date>` is the drive name's first ten
characters; `RGB_ROOT/<drive>/...` is accepted too); without `--rgb-root` the frames are looked for in the
annotation's own drive folder, `DIR/<split>/<drive>/image_0{2,3}/data/`. KITTI's `train` goes to train
and its `val` to validation; `--test N` carves a test part from train (KITTI's test set has no public
ground truth). Frames keep their size (drives differ by a few pixels, so a set of several drives needs
`--crop`, usually the common bottom crop 1216x352).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from nas.data.importers.writer import (MAX_DEPTH_M, Geometry, ImportPlan, Sample, carve_test, sha256_listing)
from nas.errors import ConfigError

SPLIT_OF = {"train": "train", "val": "validation"}
CAMERAS = {"02": ("image_02",), "03": ("image_03",), "both": ("image_02", "image_03")}
SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I", "I;16N")


def _header(path: Path) -> tuple[str, tuple[int, int]]:
    try:
        with Image.open(path) as im:
            return im.mode, im.size
    except OSError as exc:
        raise ConfigError(path, f"unreadable image ({exc})") from exc


def _rgb_path(root: Path, rgb_root: Path | None, split: str, drive: str, camera: str, name: str) -> list[Path]:
    """Where the RGB frame of an annotation may be, in the order looked at."""
    if rgb_root is None:
        return [root / split / drive / camera / "data" / name]
    return [rgb_root / drive[:10] / drive / camera / "data" / name, rgb_root / drive / camera / "data" / name]


def plan_kitti(root: Path, rgb_root: Path | None = None, camera: Literal["02", "03", "both"] = "both",
               test: int = 0, seed: int = 0, geometry: Geometry | None = None,
               max_depth_m: float = MAX_DEPTH_M) -> ImportPlan:
    """The import of KITTI's depth annotations, every header and RGB frame checked (ConfigError) first."""
    root = Path(root)
    rgb_root = None if rgb_root is None else Path(rgb_root)
    if not root.is_dir():
        raise ConfigError(root, "folder does not exist")
    if rgb_root is not None and not rgb_root.is_dir():
        raise ConfigError(rgb_root, "folder does not exist (--rgb-root: KITTI raw, holding <date>/<drive>/)")
    if camera not in CAMERAS:
        raise ConfigError(None, f"--camera {camera!r}: expected 02, 03 or both")
    samples: list[Sample] = []
    missing: list[Path] = []
    read_files: list[Path] = []
    for split in SPLIT_OF:
        for cam in CAMERAS[camera]:
            for depth in sorted((root / split).glob(f"*/proj_depth/groundtruth/{cam}/*.png")):
                drive = depth.parents[3].name
                candidates = _rgb_path(root, rgb_root, split, drive, cam, depth.name)
                rgb = next((p for p in candidates if p.is_file()), None)
                if rgb is None:
                    missing.append(candidates[0])
                    continue
                mode, size = _header(depth)
                if mode not in SIXTEEN_BIT:
                    raise ConfigError(depth, f"depth annotation has mode {mode}; expected a 16-bit PNG (value/256 m)")
                rgb_size = _header(rgb)[1]
                if rgb_size != size:
                    raise ConfigError(depth, f"depth is {size[0]}×{size[1]} but its RGB frame {rgb} "
                                             f"{rgb_size[0]}×{rgb_size[1]}")
                samples.append(Sample(stem=f"{drive}_{cam[-2:]}_{depth.stem}", split=SPLIT_OF[split], size=size,
                                      origin=depth, read=_reader(rgb, depth)))
                read_files += [depth, rgb]
    if missing:
        raise ConfigError(missing[0], f"RGB frame is missing ({len(missing)} annotation(s) have none); pass "
                                      "--rgb-root with KITTI raw's folder holding <date>/<drive>/image_02/data/")
    if not samples:
        raise ConfigError(root, f"no annotations found; expected {root}/{{train,val}}/<drive>/proj_depth/"
                                "groundtruth/image_02/NNNNNNNNNN.png")
    samples = carve_test(samples, test, seed, root)
    inputs = {"folder": str(root.resolve()), "rgb_root": None if rgb_root is None else str(rgb_root.resolve()),
              "listing_sha256": sha256_listing(root, [p for p in read_files if p.is_relative_to(root)])}
    if rgb_root is not None:
        inputs["rgb_listing_sha256"] = sha256_listing(rgb_root, [p for p in read_files if p.is_relative_to(rgb_root)])
    return ImportPlan(source="kitti", samples=samples, inputs=inputs,
                      options={"camera": camera, "test": test, "seed": seed}, geometry=geometry or Geometry(),
                      max_depth_m=max_depth_m)


def _reader(rgb: Path, depth: Path):
    def read() -> tuple[np.ndarray, np.ndarray]:
        with Image.open(rgb) as im:
            image = np.asarray(im.convert("RGB"))
        with Image.open(depth) as im:
            metres = np.asarray(im).astype(np.float64) / 256.0  # 0 stays 0: no measurement
        return image, metres

    return read
