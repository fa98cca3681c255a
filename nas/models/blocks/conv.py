"""Plain U-Net decoder block: two 3×3 conv-BN-ReLU (the segmentation_models_pytorch default)."""

from __future__ import annotations

from timm.layers import ConvNormAct
from torch import nn


class ConvBlock(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, **_: object):
        super().__init__(
            ConvNormAct(in_channels, out_channels, 3),
            ConvNormAct(out_channels, out_channels, 3),
        )
