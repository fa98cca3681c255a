"""Single Residual Block from RFDN (Airia-Team1): 3×3 conv plus identity, then LeakyReLU(0.05)."""

from __future__ import annotations

import torch
from timm.layers import ConvNormAct
from torch import nn


class SRB(nn.Module):
    """The residual unit itself; channel count is preserved."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.act = nn.LeakyReLU(0.05)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x) + x)


class SRBBlock(nn.Sequential):
    """Decoder block: 1×1 projection to the stage width, then one SRB."""

    def __init__(self, in_channels: int, out_channels: int, **_: object):
        super().__init__(ConvNormAct(in_channels, out_channels, 1), SRB(out_channels))
