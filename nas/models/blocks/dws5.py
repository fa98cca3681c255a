"""FastDepth's NNConv5: a 5×5 depthwise conv then a 1×1 pointwise conv, each with BN and ReLU."""

from __future__ import annotations

from timm.layers import SeparableConvNormAct


class DepthwiseSeparable5(SeparableConvNormAct):
    def __init__(self, in_channels: int, out_channels: int, **_: object):
        super().__init__(in_channels, out_channels, kernel_size=5)
