"""Residual Feature Distillation Block (RFDN; used by Airia-Team1 in MAI 2021).

Three stages each split the features into a 1×1 "distilled" part (C/2) kept aside and an SRB
"refined" part passed on; a final 3×3 conv to C/2 joins the three distilled parts, and a 1×1 conv
maps the four C/2 parts back to C, optionally followed by ESA attention. The block adds its input.
"""

from __future__ import annotations

import torch
from timm.layers import ConvNormAct
from torch import nn

from nas.models.blocks.esa import ESA
from nas.models.blocks.srb import SRB


class RFDB(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, esa: bool = False, **_: object):
        super().__init__()
        c, half = out_channels, out_channels // 2
        self.project = ConvNormAct(in_channels, c, 1) if in_channels != c else nn.Identity()
        self.distill = nn.ModuleList(nn.Conv2d(c, half, 1) for _ in range(3))
        self.refine = nn.ModuleList(SRB(c) for _ in range(3))
        self.last = nn.Conv2d(c, half, 3, padding=1)
        self.act = nn.LeakyReLU(0.05)
        self.fuse = nn.Conv2d(half * 4, c, 1)
        self.esa = ESA(c) if esa else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.project(x)
        parts, y = [], x
        for distill, refine in zip(self.distill, self.refine):
            parts.append(self.act(distill(y)))
            y = refine(y)
        parts.append(self.act(self.last(y)))
        return self.esa(self.fuse(torch.cat(parts, dim=1))) + x
