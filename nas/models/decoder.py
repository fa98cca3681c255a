"""U-Net-style decoder: per stage upsample, merge the encoder skip (none / add / concat), fuse."""

from __future__ import annotations

import torch
from timm.layers import ConvNormAct
from torch import nn

from nas.models.blocks import create_block
from nas.models.ffm import FeatureFusionModule
from nas.models.upsample import Upsample


class DecoderStage(nn.Module):
    """Upsample to the skip's size, merge the skip, then run the stage's fusion block."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, skip: str, block: str,
                 upsample: str, rfdb_esa: bool):
        super().__init__()
        self.skip = skip
        self.upsample = Upsample(upsample, in_channels)
        # "add" (FastDepth) needs equal widths: project the skip to the running width when they differ.
        self.skip_proj = (ConvNormAct(skip_channels, in_channels, 1)
                          if skip == "add" and skip_channels != in_channels else nn.Identity())
        block_in = in_channels + skip_channels if skip == "concat" else in_channels
        self.block = create_block(block, block_in, out_channels, esa=rfdb_esa)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None, size: tuple[int, int]) -> torch.Tensor:
        x = self.upsample(x, size)
        if self.skip == "add":
            x = x + self.skip_proj(skip)
        elif self.skip == "concat":
            x = torch.cat([x, skip], dim=1)
        return self.block(x)


class UNetDecoder(nn.Module):
    """Stage i (0 = deepest) upsamples to encoder level depth-2-i; the last one to the input size."""

    def __init__(self, encoder_channels: list[int], decoder_channels: tuple[int, ...], skips: tuple[str, ...],
                 blocks: tuple[str, ...], upsample: str, ffm: bool, rfdb_esa: bool):
        super().__init__()
        depth = len(decoder_channels)
        skip_channels = [encoder_channels[depth - 2 - i] if i < depth - 1 else 0 for i in range(depth)]
        in_channels = [encoder_channels[-1], *decoder_channels[:-1]]
        self.stages = nn.ModuleList(
            DecoderStage(cin, cs if skip != "none" else 0, cout, skip, block, upsample, rfdb_esa)
            for cin, cs, cout, skip, block in zip(in_channels, skip_channels, decoder_channels, skips, blocks))
        self.ffm = FeatureFusionModule(list(decoder_channels), decoder_channels[-1], upsample) if ffm else None
        self.out_channels = decoder_channels[-1]

    def forward(self, features: list[torch.Tensor], input_size: tuple[int, int]) -> torch.Tensor:
        depth = len(self.stages)
        x, outputs = features[-1], []
        for i, stage in enumerate(self.stages):
            if i < depth - 1:
                skip = features[depth - 2 - i]
                size = (int(skip.shape[2]), int(skip.shape[3]))
            else:
                skip, size = None, input_size
            x = stage(x, skip if stage.skip != "none" else None, size)
            outputs.append(x)
        return self.ffm(outputs) if self.ffm is not None else x
