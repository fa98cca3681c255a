"""Reading the data set into memory at a working resolution, and the training batches made from it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from nas.data.layout import list_pairs


def load_rgb(path: Path, size_wh: tuple[int, int] | None = None) -> np.ndarray:
    """RGB uint8 (H, W, 3), resized bilinearly to `size_wh` when given."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        if size_wh and im.size != size_wh:
            im = im.resize(size_wh, Image.BILINEAR)
        return np.asarray(im, dtype=np.uint8)


def load_depth_mm(path: Path, size_wh: tuple[int, int] | None = None) -> np.ndarray:
    """Depth uint16 millimetres (H, W); nearest resize keeps 0 (unknown) from bleeding into values."""
    with Image.open(path) as im:
        if size_wh and im.size != size_wh:
            im = im.resize(size_wh, Image.NEAREST)
        return np.asarray(im).astype(np.uint16)


@dataclass
class DepthSplit:
    """One split in memory: images (N, H, W, 3) uint8, depth (N, H, W) uint16 mm, and their stems."""

    rgb: np.ndarray
    depth_mm: np.ndarray
    stems: list[str]

    def __len__(self) -> int:
        return len(self.stems)


def load_split(root: Path, split: str, size_wh: tuple[int, int] | None = None, limit: int | None = None) -> DepthSplit:
    pairs = list_pairs(Path(root), split)[:limit]
    if not pairs:
        raise FileNotFoundError(f"{Path(root) / split}: no RGB/depth pairs")
    rgb = np.stack([load_rgb(r, size_wh) for r, _ in pairs])
    depth = np.stack([load_depth_mm(d, size_wh) for _, d in pairs])
    return DepthSplit(rgb, depth, [r.stem for r, _ in pairs])


def to_tensors(rgb: np.ndarray, depth_mm: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """NCHW float 0..255 images and N1HW depth in metres (0 = unknown)."""
    image = torch.from_numpy(rgb).permute(0, 3, 1, 2).float()
    depth = torch.from_numpy(depth_mm.astype(np.float32) / 1000.0).unsqueeze(1)
    return image, depth
