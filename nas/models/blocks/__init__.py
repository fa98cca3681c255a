"""Decoder fusion blocks, one concept per file, and the registry that maps `Arch.blocks` names to them."""

from __future__ import annotations

from torch import nn

from nas.models.blocks.conv import ConvBlock
from nas.models.blocks.dws5 import DepthwiseSeparable5
from nas.models.blocks.rfdb import RFDB
from nas.models.blocks.srb import SRBBlock

BLOCKS: dict[str, type[nn.Module]] = {
    "conv": ConvBlock,
    "dws5": DepthwiseSeparable5,
    "srb": SRBBlock,
    "rfdb": RFDB,
}


def create_block(name: str, in_channels: int, out_channels: int, **kwargs) -> nn.Module:
    """Build the fusion block `name` mapping `in_channels` to `out_channels`."""
    return BLOCKS[name](in_channels, out_channels, **kwargs)
