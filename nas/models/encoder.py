"""Encoder: a timm classification backbone as a feature pyramid, built without downloading weights."""

from __future__ import annotations

import timm
import torch
from torch import nn

from ..arch import ArchError


class Encoder(nn.Module):
    """The first `depth` feature levels of `backbone` (strides 2, 4, ... 2**depth)."""

    def __init__(self, backbone: str, depth: int, pretrained_file: str | None = None):
        super().__init__()
        if backbone not in timm.list_models():
            raise ArchError(f"unknown timm backbone {backbone!r}")
        kwargs = {"pretrained_cfg_overlay": {"file": pretrained_file}} if pretrained_file else {}
        self.model = timm.create_model(backbone, pretrained=bool(pretrained_file), features_only=True,
                                       out_indices=tuple(range(depth)), **kwargs)
        reductions = self.model.feature_info.reduction()
        expected = [2 ** (i + 1) for i in range(depth)]
        if reductions != expected:
            raise ArchError(f"backbone {backbone!r} gives feature strides {reductions}; "
                            f"the decoder needs {expected}")
        self.channels: list[int] = list(self.model.feature_info.channels())

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.model(x)
