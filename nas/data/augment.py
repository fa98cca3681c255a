"""Geometric augmentation applied identically to every aligned map of a batch.

Image, ground truth and (when distilling) the cached teacher depth must stay pixel-aligned, so one
random draw (crop window, flip) is applied to all of them; depth maps are resampled with nearest so
unknown pixels (0) never blend into valid ones.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def flip_and_crop(maps: dict[str, torch.Tensor], generator: torch.Generator, min_scale: float = 0.8,
                  flip_p: float = 0.5) -> dict[str, torch.Tensor]:
    """Same random crop (scale in [min_scale, 1], resized back) and horizontal flip for all maps.

    `maps` values are (N, C, H, W) of one spatial size; key "image" is resampled bilinearly,
    everything else with nearest.
    """
    h, w = next(iter(maps.values())).shape[-2:]
    scale = float(torch.empty(1).uniform_(min_scale, 1.0, generator=generator))
    ch, cw = max(int(h * scale), 1), max(int(w * scale), 1)
    top = int(torch.randint(0, h - ch + 1, (1,), generator=generator))
    left = int(torch.randint(0, w - cw + 1, (1,), generator=generator))
    flip = bool(torch.rand(1, generator=generator) < flip_p)
    out = {}
    for key, x in maps.items():
        x = x[..., top:top + ch, left:left + cw]
        if (ch, cw) != (h, w):
            mode = {"mode": "bilinear", "align_corners": False} if key == "image" else {"mode": "nearest"}
            x = F.interpolate(x, size=(h, w), **mode)
        out[key] = torch.flip(x, dims=[-1]) if flip else x
    return out
