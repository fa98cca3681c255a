"""Feature Fusion Module of Tencent GY-Lab (MAI 2021 winner).

The output block sees the decoder features of several levels at once: each level is projected to a
few channels with a 1×1 conv, resized to the finest level's size, concatenated, and fused by a 3×3
conv. Coarse levels carry global layout, fine levels carry edges; fusing them steadies the output.
"""

from __future__ import annotations

import torch
from timm.layers import ConvNormAct
from torch import nn

from nas.models.upsample import resize_to


class FeatureFusionModule(nn.Module):
    def __init__(self, in_channels: list[int], out_channels: int, mode: str = "bilinear"):
        super().__init__()
        self.mode = "nearest" if mode == "nearest" else "bilinear"
        self.project = nn.ModuleList(ConvNormAct(c, out_channels, 1) for c in in_channels)
        self.fuse = ConvNormAct(out_channels * len(in_channels), out_channels, 3)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        size = (int(features[-1].shape[2]), int(features[-1].shape[3]))
        parts = [resize_to(p(f), size, self.mode) for p, f in zip(self.project, features)]
        return self.fuse(torch.cat(parts, dim=1))
