"""Depth networks: timm encoders, decoder blocks, heads, composed by `DepthNet(arch)`.

`complexity` counts what a network costs (parameters, multiply-accumulates); the device a network
runs on is described elsewhere, by `nas.hardware.profile`.
"""

from nas.models.complexity import count_macs, count_params
from nas.models.depthnet import DepthNet

__all__ = ["DepthNet", "count_macs", "count_params"]
