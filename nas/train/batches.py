"""Training batches: where the pixels a network learns from come from.

The rule (issue "train every candidate at the pixel scale it will run at"): a budget fixes the
*internal* resolution trained at (the size the encoder sees, so every candidate costs about the same
per step). A candidate whose `input_scale` is a ratio `s` of the input trains on random crops of the
full-resolution image of size internal / s, clipped to the whole image; inside, the network resizes
the crop by `s`, exactly as it resizes the 640×480 frame on the device, so one pixel of the crop is
one pixel of a deployed frame. A candidate with a fixed internal size ("128x160") trains on whole
frames, which is what it gets on the device. Crops are taken at native resolution (no zoom), and a
horizontal flip is the only other augmentation, so the pixel scale never drifts.

The teacher's depth is cached at a lower resolution over whole frames; each crop takes the matching
window of it, resampled to the crop's size (torchvision's `roi_align`), so image, ground truth and
teacher stay aligned.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np
import torch
from torchvision.ops import roi_align

from nas.data.augment import flip_and_crop
from nas.data.dataset import DepthSplit, to_tensors

Batch = dict[str, torch.Tensor]


class BatchSource(Protocol):
    """Draws one training batch: "image" (B,3,H,W) 0..255, "depth" (B,1,H,W) metres, maybe "teacher"."""

    def __call__(self, generator: torch.Generator) -> Batch: ...


def training_crop(input_scale: str, internal_hw: tuple[int, int], image_hw: tuple[int, int]) -> tuple[int, int]:
    """Crop (H, W) of a full-resolution frame that a candidate trains on (see the module docstring)."""
    if "x" in input_scale:
        return image_hw
    scale = float(input_scale)
    return (min(image_hw[0], math.ceil(internal_hw[0] / scale)), min(image_hw[1], math.ceil(internal_hw[1] / scale)))


class PixelScaleBatches:
    """Random crops of one size from a full-resolution split (memory-mapped), with the teacher's window."""

    def __init__(self, split: DepthSplit, batch_size: int, crop_hw: tuple[int, int],
                 teacher: np.ndarray | None = None):
        self.split = split
        self.batch_size = min(batch_size, len(split))
        self.crop_hw = crop_hw
        self.teacher = teacher  # (N, h, w) metres over whole frames, aligned with `split`

    def __call__(self, generator: torch.Generator) -> Batch:
        n, height, width = self.split.depth_mm.shape
        ch, cw = self.crop_hw
        idx = torch.randint(0, n, (self.batch_size,), generator=generator).numpy()
        tops = torch.randint(0, height - ch + 1, (self.batch_size,), generator=generator).numpy()
        lefts = torch.randint(0, width - cw + 1, (self.batch_size,), generator=generator).numpy()
        flip = bool(torch.rand(1, generator=generator) < 0.5)
        rgb = np.stack([self.split.rgb[i, t:t + ch, l:l + cw] for i, t, l in zip(idx, tops, lefts)])
        depth = np.stack([self.split.depth_mm[i, t:t + ch, l:l + cw] for i, t, l in zip(idx, tops, lefts)])
        image, depth_m = to_tensors(rgb, depth)
        batch = {"image": image, "depth": depth_m}
        if self.teacher is not None:
            maps = torch.from_numpy(np.stack([self.teacher[i] for i in idx]).astype(np.float32)).unsqueeze(1)
            boxes = torch.tensor([[k, l, t, l + cw, t + ch] for k, (t, l) in enumerate(zip(tops, lefts))],
                                 dtype=torch.float32)
            # Box corners are in full-resolution pixels; spatial_scale maps them onto the teacher grid.
            batch["teacher"] = roi_align(maps, boxes, output_size=(ch, cw), spatial_scale=maps.shape[-1] / width,
                                         sampling_ratio=2, aligned=True)
        if flip:
            batch = {k: torch.flip(v, dims=[-1]) for k, v in batch.items()}
        return batch


class WholeFrameBatches:
    """Whole frames of a split held at one resolution, with a mild random zoom (the teacher's diet).

    The teacher is never deployed, so it learns from whole frames at its own resolution; its cache
    covers whole frames at that resolution too.
    """

    def __init__(self, split: DepthSplit, batch_size: int, extra_maps: dict[str, np.ndarray] | None = None):
        self.split = split
        self.batch_size = min(batch_size, len(split))
        self.extra_maps = extra_maps or {}

    def __call__(self, generator: torch.Generator) -> Batch:
        idx = torch.randint(0, len(self.split), (self.batch_size,), generator=generator).numpy()
        image, depth = to_tensors(self.split.rgb[idx], self.split.depth_mm[idx])
        maps = {"image": image, "depth": depth}
        for key, arr in self.extra_maps.items():
            maps[key] = torch.from_numpy(arr[idx].astype(np.float32)).unsqueeze(1)
        return flip_and_crop(maps, generator)
