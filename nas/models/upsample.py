"""Upsampling to an exact target size, in the four flavours the search space offers.

Sizes do not always halve evenly (480/32 = 15, 240/32 = 7.5, so an encoder rounds up), so every
flavour ends at the skip's exact size: learned ×2 ops are followed by a resize when they overshoot.
Target sizes are read as Python ints, which makes them constants in an exported graph. The depth map's
last upsampling (`upsample_bilinear`) and edge padding (`edge_pad`) are written in the ops TFLite's
XNNPACK delegate runs fastest.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn


@functools.cache
def bilinear_subpixel_kernel(factor: int) -> torch.Tensor:
    """(factor², 1, 3, 3) weights: output channel i·factor + j holds sub-pixel (i, j) of each input pixel, a
    weighted sum of its 3×3 neighbourhood equal to PyTorch's bilinear upsampling (align_corners=False)."""
    taps = []
    for k in range(factor):
        t = (k + 0.5) / factor - 0.5  # where sub-pixel k samples, relative to its input pixel: (-0.5, 0.5)
        taps.append([-t, 1 + t, 0.0] if t < 0 else [0.0, 1 - t, t])
    rows = torch.tensor(taps, dtype=torch.float64)
    kernel = rows[:, None, :, None] * rows[None, :, None, :]  # (i, j, 3, 3): outer product of the 1-D weights
    return kernel.reshape(factor * factor, 1, 3, 3).float()


def upsample_bilinear(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling of a one-channel map to `size`; by a whole factor, as a convolution + depth-to-space.

    Where `size` is the same whole multiple of both sides (640×480 from 64×48, 128×96, 160×120 ...), the
    result equals `F.interpolate(..., mode="bilinear", align_corners=False)` but exports as an edge pad, a
    constant 3×3 convolution to factor² channels and DEPTH_TO_SPACE, which TFLite runs in under half the
    time of RESIZE_BILINEAR on a one-channel map (`benchmarks/latency_floor.md`: 0.55 against
    1.07 ms at 48×64 on a 2-core x86). Other sizes are resized.
    """
    h, w = int(x.shape[2]), int(x.shape[3])
    factor = size[0] // h
    if int(x.shape[1]) != 1 or factor < 2 or (h * factor, w * factor) != tuple(size):
        return resize_to(x, size, "bilinear")
    kernel = bilinear_subpixel_kernel(factor).to(device=x.device, dtype=x.dtype)
    return F.pixel_shuffle(F.conv2d(edge_pad(x), kernel), factor)


def edge_pad(x: torch.Tensor) -> torch.Tensor:
    """`x` with its border pixels repeated once on every side (replicate padding), written as slices and
    concatenations: those stay in TFLite's XNNPACK delegate, where the MIRROR_PAD ops that onnx2tf makes of
    a replicate pad do not (0.1 ms at 48×64 on a 2-core x86, `benchmarks/latency_floor.md`)."""
    x = torch.cat([x[:, :, :1], x, x[:, :, -1:]], dim=2)
    return torch.cat([x[:, :, :, :1], x, x[:, :, :, -1:]], dim=3)


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
