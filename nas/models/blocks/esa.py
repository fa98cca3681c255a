"""Enhanced Spatial Attention, the optional tail of an RFDB (RFDN, Liu et al. 2020).

Kept to ops every TFLite converter maps directly: strided conv, max-pool, bilinear resize, sigmoid.

The max-pool's border is an explicit edge (replicate) pad, not the pool's own padding, written as slices and
concatenations (`edge_pad`), which stay in XNNPACK where onnx2tf's MIRROR_PADs for `F.pad` would not. For a 3×3,
stride-2 window every padded element is a copy of one the window already holds, so the result is
exactly PyTorch's -inf padding. A padded pool is what onnx2tf cannot convert well: in float32 it pads
with float32's lowest value, which int8 calibration then takes as the activation range (the model it
gave made LiteRT abort with a double free when loaded), and when asked to quantize it pads with 0
instead, which changes the float32 result wherever a border window is all negative.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nas.models.upsample import edge_pad


class ESA(nn.Module):
    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        f = max(channels // reduction, 4)
        self.reduce = nn.Conv2d(channels, f, 1)
        self.down = nn.Conv2d(f, f, 3, stride=2, padding=1)
        self.body = nn.Conv2d(f, f, 3, padding=1)
        self.skip = nn.Conv2d(f, f, 1)
        self.expand = nn.Conv2d(f, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.reduce(x)
        y = F.max_pool2d(edge_pad(self.down(r)), kernel_size=3, stride=2)
        y = self.body(y)
        size = (int(x.shape[2]), int(x.shape[3]))  # static under export: becomes a constant
        y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
        return x * torch.sigmoid(self.expand(y + self.skip(r)))
