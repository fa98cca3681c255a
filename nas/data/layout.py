"""The MAI 2021 data layout (contract): ROOT/{train,validation,test}/{rgb,depth}/NAME.ext."""

from __future__ import annotations

from pathlib import Path

SPLITS = ("train", "validation", "test")
REQUIRED_SPLITS = ("train", "validation")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def list_images(folder: Path) -> dict[str, Path]:
    """Image files of a folder keyed by stem (hidden files and other suffixes ignored)."""
    if not folder.is_dir():
        return {}
    return {p.stem: p for p in sorted(folder.iterdir())
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")}


def list_pairs(root: Path, split: str) -> list[tuple[Path, Path]]:
    """(rgb, depth) paths sharing a stem, in stem order."""
    rgb, depth = list_images(root / split / "rgb"), list_images(root / split / "depth")
    return [(rgb[s], depth[s]) for s in sorted(rgb.keys() & depth.keys())]


def pair_stamps(split: str, pairs: list[tuple[Path, Path]]) -> str:
    """One line per pair: split, stem, suffixes, sizes and mtimes (ns). Hashed, it notices a touched,
    replaced, added or removed file without reading any image."""
    lines = []
    for rgb, depth in pairs:
        a, b = rgb.stat(), depth.stat()
        lines.append(f"{split}/{rgb.stem}|{rgb.suffix}|{a.st_size}|{a.st_mtime_ns}|{depth.suffix}|"
                     f"{b.st_size}|{b.st_mtime_ns}\n")
    return "".join(lines)
