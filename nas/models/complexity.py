"""Model size figures recorded on every trial: parameters and multiply-accumulates."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: torch.nn.Module) -> int:
    """Parameters of every tensor the model trains or holds (not its buffers)."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model: torch.nn.Module, height: int, width: int) -> int:
    """MACs of one forward pass at (height, width), from torch's FLOP counter (FLOPs / 2)."""
    model = model.eval()
    device = next(model.parameters()).device
    counter = FlopCounterMode(display=False)
    with counter:
        model(torch.zeros(1, 3, height, width, device=device))
    return counter.get_total_flops() // 2
