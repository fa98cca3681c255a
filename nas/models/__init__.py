"""Depth networks: timm encoders, decoder blocks, heads, composed by `DepthNet(arch)`.

`complexity` counts what a network costs (parameters, multiply-accumulates); the device a network
runs on is described elsewhere, by `nas.hardware.profile`.
"""

from .complexity import count_macs, count_params
from .depthnet import DepthNet

__all__ = ["DepthNet", "count_macs", "count_params"]
