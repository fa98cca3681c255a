"""Depth networks: timm encoders, decoder blocks, heads, composed by `DepthNet(arch)`."""

from .depthnet import DepthNet
from .profile import count_macs, count_params

__all__ = ["DepthNet", "count_macs", "count_params"]
