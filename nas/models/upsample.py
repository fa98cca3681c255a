"""Upsampling to an exact target size, in the four flavours the search space offers.

Sizes do not always halve evenly (480/32 = 15, 240/32 = 7.5, so an encoder rounds up), so every
flavour ends at the skip's exact size: learned ×2 ops are followed by a resize when they overshoot.
Target sizes are read as Python ints, which makes them constants in an exported graph.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def resize_to(x: torch.Tensor, size: tuple[int, int], mode: str = "nearest") -> torch.Tensor:
    """Resize `x` to `size` (H, W) unless it is already that size."""
    if (int(x.shape[2]), int(x.shape[3])) == tuple(size):
        return x
    if mode == "nearest":
        return F.interpolate(x, size=size, mode="nearest")
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class Upsample(nn.Module):
    """Upsample `channels` feature maps to a given size; learned kinds keep the channel count."""

    def __init__(self, kind: str, channels: int):
        super().__init__()
        self.kind = kind
        if kind == "pixelshuffle":
            self.learned = nn.Sequential(nn.Conv2d(channels, channels * 4, 1), nn.PixelShuffle(2))
        elif kind == "transpose":
            self.learned = nn.ConvTranspose2d(channels, channels, kernel_size=2, stride=2)
        else:
            self.learned = None

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if self.learned is not None:
            x = self.learned(x)
            return resize_to(x, size, "nearest")
        return resize_to(x, size, self.kind)
