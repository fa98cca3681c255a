"""Depth losses in log space, on the pixels a mask marks valid.

The Final Score judges si-RMSE, so the main term is the scale-invariant log loss (Eigen et al.), with
a little of the scale term kept (variance_focus < 1) so absolute depth (RMSE) is learned too, and a
gradient term on log depth that sharpens edges.
"""

from __future__ import annotations

import torch


def silog_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, variance_focus: float = 0.85,
               eps: float = 1e-6) -> torch.Tensor:
    """sqrt(mean(d^2) - variance_focus * mean(d)^2), d = log pred - log target over the mask, per image."""
    d = torch.log(pred.clamp_min(eps)) - torch.log(target.clamp_min(eps))
    m = mask.float()
    n = m.flatten(1).sum(1).clamp_min(1.0)
    mean_d = (d * m).flatten(1).sum(1) / n
    mean_d2 = (d * d * m).flatten(1).sum(1) / n
    return torch.sqrt((mean_d2 - variance_focus * mean_d**2).clamp_min(eps)).mean()


def log_gradient_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """L1 between horizontal/vertical differences of log depth, where both neighbours are valid."""
    d = torch.log(pred.clamp_min(eps)) - torch.log(target.clamp_min(eps))
    m = mask.float()
    mx = m[..., :, 1:] * m[..., :, :-1]
    my = m[..., 1:, :] * m[..., :-1, :]
    gx = (d[..., :, 1:] - d[..., :, :-1]).abs() * mx
    gy = (d[..., 1:, :] - d[..., :-1, :]).abs() * my
    return gx.sum() / mx.sum().clamp_min(1.0) + gy.sum() / my.sum().clamp_min(1.0)


def supervised_loss(pred: torch.Tensor, target: torch.Tensor, gradient_weight: float = 0.5) -> torch.Tensor:
    """Loss against ground truth in metres; 0 (unknown) pixels are ignored."""
    mask = target > 0.001
    return silog_loss(pred, target, mask) + gradient_weight * log_gradient_loss(pred, target, mask)
