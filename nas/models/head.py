"""Depth head: features to one channel of depth in metres, with a positive output activation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

MIN_DEPTH_M = 0.1


class DepthHead(nn.Module):
    """`relu`: ReLU + offset; `softplus`: softplus + offset; `sigmoid`: sigmoid × max depth + offset."""

    def __init__(self, in_channels: int, activation: str, max_depth: float):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 1, 3, padding=1)
        self.activation = activation
        self.max_depth = max_depth
        # Start near a plausible mean depth so early training steps are not spent climbing from 0.
        nn.init.zeros_(self.conv.weight)
        start = {"relu": 3.0, "softplus": 3.0, "sigmoid": -2.5}[activation]
        nn.init.constant_(self.conv.bias, start)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        if self.activation == "relu":
            return F.relu(y) + MIN_DEPTH_M
        if self.activation == "softplus":
            # Written out in its overflow-free form: converters emit log(exp(y) + 1), which is inf
            # in float32 for y > 88 and would poison a deployed model's output.
            return F.relu(y) + torch.log(1.0 + torch.exp(-torch.abs(y))) + MIN_DEPTH_M
        return torch.sigmoid(y) * self.max_depth + MIN_DEPTH_M
