"""Data-set checker: every bad file, named with what is wrong, before any work starts."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from nas.errors import ConfigError, shown_path
from nas.data.layout import REQUIRED_SPLITS, SPLITS, list_images

SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


@dataclass(frozen=True)
class Problem:
    path: Path
    message: str

    def __str__(self) -> str:
        return f"{shown_path(self.path)}: {self.message}"


def _name_problem(path: Path) -> str | None:
    """A file name that is not UTF-8 (its bytes kept as surrogates): caches, fingerprints and records, which are
    text, cannot hold it."""
    try:
        path.name.encode("utf-8")
    except UnicodeEncodeError:
        return "file name is not UTF-8; rename it (and its RGB or depth partner) with a UTF-8 name"
    return None


def _inspect(path: Path) -> tuple[str, tuple[int, int]] | str:
    """(mode, size) of a readable image, or the reason it cannot be read."""
    try:
        with Image.open(path) as im:
            im.load()
            return im.mode, im.size
    except Exception as exc:  # PIL raises many kinds for broken files
        return f"unreadable image ({type(exc).__name__}: {exc})"


def _depth_values_problem(path: Path) -> str | None:
    """What is wrong with a 16-bit depth map's values: none valid, or beyond 16 bits (a 32-bit image)."""
    with Image.open(path) as im:
        if im.format != "PNG":
            return f"depth map is a {im.format} file named .png; expected a 16-bit single-channel PNG"
        values = np.asarray(im)
    if values.max(initial=0) > 65535 or values.min(initial=0) < 0:
        return (f"depth values span {values.min()}..{values.max()}, outside 16-bit millimetres; "
                "expected a 16-bit single-channel PNG")
    if not (values > 1).any():
        return "depth map has no valid pixel (every value is 0 or 1 mm): nothing to train or score on"
    return None


def check_dataset(root: Path, splits: tuple[str, ...] = SPLITS) -> list[Problem]:
    """All problems of the data set at `root`; empty when it is usable."""
    root = Path(root)
    if not root.is_dir():
        return [Problem(root, "data folder does not exist")]
    problems: list[Problem] = []
    sizes: Counter[tuple[int, int]] = Counter()
    seen: list[tuple[Path, tuple[int, int]]] = []
    for split in splits:
        rgb_dir, depth_dir = root / split / "rgb", root / split / "depth"
        if not (root / split).is_dir():
            if split in REQUIRED_SPLITS:
                problems.append(Problem(root / split, "split folder is missing"))
            continue
        for folder in (rgb_dir, depth_dir):
            if not folder.is_dir():
                problems.append(Problem(folder, "folder is missing"))
        rgb, depth = list_images(rgb_dir), list_images(depth_dir)
        for path in sorted([*rgb.values(), *depth.values()]):
            if problem := _name_problem(path):
                problems.append(Problem(path, problem))
        if split in REQUIRED_SPLITS and rgb_dir.is_dir() and depth_dir.is_dir() and not (rgb.keys() & depth.keys()):
            problems.append(Problem(root / split, "no RGB/depth pairs"))
        for stem in sorted(rgb.keys() - depth.keys()):
            problems.append(Problem(rgb[stem], f"no depth map with stem {stem!r} in {depth_dir}"))
        for stem in sorted(depth.keys() - rgb.keys()):
            problems.append(Problem(depth[stem], f"no RGB image with stem {stem!r} in {rgb_dir}"))
        for stem in sorted(rgb.keys() & depth.keys()):
            rgb_info, depth_info = _inspect(rgb[stem]), _inspect(depth[stem])
            if isinstance(rgb_info, str):
                problems.append(Problem(rgb[stem], rgb_info))
            elif rgb_info[0] not in ("RGB", "RGBA", "L"):
                problems.append(Problem(rgb[stem], f"RGB image has mode {rgb_info[0]}; expected 8-bit RGB"))
            if isinstance(depth_info, str):
                problems.append(Problem(depth[stem], depth_info))
            elif depth_info[0] not in SIXTEEN_BIT_MODES:
                problems.append(Problem(depth[stem], f"depth map has mode {depth_info[0]}; expected a "
                                                     "16-bit single-channel PNG (millimetres)"))
            elif problem := _depth_values_problem(depth[stem]):
                problems.append(Problem(depth[stem], problem))
            if isinstance(rgb_info, str) or isinstance(depth_info, str):
                continue
            if rgb_info[1] != depth_info[1]:
                problems.append(Problem(depth[stem], f"depth size {depth_info[1]} differs from its RGB "
                                                     f"image's {rgb_info[1]}"))
                continue
            sizes[rgb_info[1]] += 1
            seen.append((rgb[stem], rgb_info[1]))
    if sizes:
        common = sizes.most_common(1)[0][0]
        for path, size in seen:
            if size != common:
                problems.append(Problem(path, f"size {size[0]}×{size[1]} differs from the data set's "
                                              f"{common[0]}×{common[1]}"))
    return problems


class DataError(ConfigError):
    """A data set that fails the check; `problems` lists every bad file (the CLI prints them all)."""

    def __init__(self, root: Path, problems: list[Problem]):
        self.problems = problems
        super().__init__(root, f"{len(problems)} problem(s) in the data set, first: {problems[0]}")


def require_valid_dataset(root: Path, splits: tuple[str, ...] = SPLITS) -> None:
    """DataError naming every bad file, before any work reads the data set."""
    if problems := check_dataset(root, splits):
        raise DataError(Path(root), problems)
