"""Model size figures recorded on every trial: parameters, multiply-accumulates and activation elements."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: torch.nn.Module) -> int:
    """Parameters of every tensor the model trains or holds (not its buffers)."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def graph_figures(model: torch.nn.Module, height: int, width: int) -> dict[str, int]:
    """MACs (torch's FLOP counter / 2) and activation elements (outputs of every leaf module) of one frame."""
    model = model.eval()
    device = next(model.parameters()).device
    activations = 0

    def count(_module, _inputs, output) -> None:
        nonlocal activations
        if isinstance(output, torch.Tensor):
            activations += output.numel()

    hooks = [m.register_forward_hook(count) for m in model.modules() if not list(m.children())]
    counter = FlopCounterMode(display=False)
    try:
        with counter:
            model(torch.zeros(1, 3, height, width, device=device))
    finally:
        for hook in hooks:
            hook.remove()
    return {"macs": int(counter.get_total_flops() // 2), "activations": int(activations)}


def count_macs(model: torch.nn.Module, height: int, width: int) -> int:
    """MACs of one forward pass at (height, width), from torch's FLOP counter (FLOPs / 2)."""
    return graph_figures(model, height, width)["macs"]
