"""A scripted teacher and a tiny data set whose cached depth maps the tests can predict exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from nas.data.synth import synthesize


class TinyTeacher(torch.nn.Module):
    """Depth from brightness: deterministic, pixel-dependent, and instant."""

    def __init__(self, offset: float = 1.0):
        super().__init__()
        self.offset = offset

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.offset + image.mean(dim=1, keepdim=True) / 64.0


def tiny_data(root: Path, train: int = 6, val: int = 2, seed: int = 0) -> Path:
    synthesize(root, {"train": train, "validation": val}, seed=seed, width=128, height=96)
    return root


def scripted_teacher(path: Path, offset: float = 1.0) -> Path:
    torch.jit.script(TinyTeacher(offset)).save(str(path))
    return path


def expected_maps(root: Path, hw: tuple[int, int], offset: float = 1.0) -> np.ndarray:
    """TinyTeacher's depth computed independently of the cache code."""
    from nas.data.dataset import load_split

    split = load_split(root, "train", (hw[1], hw[0]))
    image = torch.from_numpy(split.rgb).permute(0, 3, 1, 2).float()
    return TinyTeacher(offset)(image)[:, 0].numpy()
