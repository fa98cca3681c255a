"""Depth losses in log space, on the pixels a mask marks valid: supervised and distillation.

The Final Score judges si-RMSE, so the supervised term is the scale-invariant log loss (Eigen et al.),
with a little of the scale term kept (variance_focus < 1) so absolute depth (RMSE) is learned too, and
a gradient term on log depth that sharpens edges.

The distillation term (against a cached teacher, on every pixel the teacher covers, so holes in the
ground truth are supervised too) is fully scale-invariant (variance focus 1) plus the same gradient
matching: the ground truth teaches absolute scale, the teacher teaches shape, and a teacher with a
slight scale bias (or a user's relative-depth teacher) does not fight the ground truth.
"""

from __future__ import annotations

import torch

GT_MIN_M = 0.001  # ground-truth pixels at or below this are unknown
TEACHER_MIN_M = 0.001  # teacher pixels at or below this are ignored (e.g. zero padding of a user model)


def _log_difference(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                    eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """d = log pred - log target (both clamped to eps, so zeros stay finite) and the mask as 0/1 floats."""
    return torch.log(pred.clamp_min(eps)) - torch.log(target.clamp_min(eps)), mask.float()


def _masked_mean(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Per-image mean of `x` over the pixels where `m` is 1 (0 for an image without any)."""
    return (x * m).flatten(1).sum(1) / m.flatten(1).sum(1).clamp_min(1.0)


def silog_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, variance_focus: float = 0.85,
               eps: float = 1e-6) -> torch.Tensor:
    """sqrt(mean(d^2) - variance_focus * mean(d)^2), d = log pred - log target over the mask, per image."""
    d, m = _log_difference(pred, target, mask, eps)
    mean_d = _masked_mean(d, m)
    mean_d2 = _masked_mean(d * d, m)
    return torch.sqrt((mean_d2 - variance_focus * mean_d**2).clamp_min(eps)).mean()


def scale_invariant_log_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                             eps: float = 1e-6) -> torch.Tensor:
    """sqrt(var(d) + eps) - sqrt(eps), d = log pred - log target over the mask, mean over images.

    Exactly zero when pred equals target up to a per-image scale; the eps keeps the gradient finite.
    """
    d, m = _log_difference(pred, target, mask, eps)
    mean_d = _masked_mean(d, m)
    centred = d - mean_d.view(-1, *([1] * (d.ndim - 1)))  # two passes: no cancellation at large d
    variance = _masked_mean(centred * centred, m)
    return (torch.sqrt(variance + eps) - eps**0.5).mean()


def log_gradient_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """L1 between horizontal/vertical differences of log depth, where both neighbours are valid."""
    d, m = _log_difference(pred, target, mask, eps)
    mx = m[..., :, 1:] * m[..., :, :-1]
    my = m[..., 1:, :] * m[..., :-1, :]
    gx = (d[..., :, 1:] - d[..., :, :-1]).abs() * mx
    gy = (d[..., 1:, :] - d[..., :-1, :]).abs() * my
    return gx.sum() / mx.sum().clamp_min(1.0) + gy.sum() / my.sum().clamp_min(1.0)


def supervised_loss(pred: torch.Tensor, target: torch.Tensor, gradient_weight: float = 0.5) -> torch.Tensor:
    """Loss against ground truth in metres; 0 (unknown) pixels are ignored."""
    mask = target > GT_MIN_M
    return silog_loss(pred, target, mask) + gradient_weight * log_gradient_loss(pred, target, mask)


def distillation_loss(pred: torch.Tensor, teacher: torch.Tensor, gradient_weight: float = 0.5) -> torch.Tensor:
    """Scale-invariant log difference plus log-gradient matching against the teacher, on all its pixels."""
    mask = teacher > TEACHER_MIN_M
    return scale_invariant_log_loss(pred, teacher, mask) + gradient_weight * log_gradient_loss(pred, teacher, mask)
