"""Encoder: a timm classification backbone as a feature pyramid, built without downloading weights.

Pretrained weights come only from a local file (`nas.models.pretrained` resolves and checks it once).
"""

from __future__ import annotations

from pathlib import Path

import timm
import torch
from torch import nn

from nas.arch import ArchError
from nas.models.pretrained import quiet_timm


class Encoder(nn.Module):
    """The first `depth` feature levels of `backbone` (strides 2, 4, ... 2**depth)."""

    def __init__(self, backbone: str, depth: int, pretrained_file: str | Path | None = None):
        super().__init__()
        if backbone not in timm.list_models():
            raise ArchError(f"unknown timm backbone {backbone!r}")
        kwargs = {"pretrained_cfg_overlay": {"file": str(pretrained_file)}} if pretrained_file else {}
        with quiet_timm():
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
