"""`DepthNet(arch)`: encoder, decoder and head composed (the segmentation_models_pytorch pattern).

The network takes what the device gets, an RGB image as float 0..255 in NCHW at deployment resolution,
normalises it itself, optionally resizes to its internal size (the largest latency lever on a weak
CPU), and returns depth in metres at the input's size. Preprocessing inside the graph means the
exported `.tflite` needs no code around it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from nas.arch import MIN_INTERNAL_SIDE, Arch
from nas.models.decoder import UNetDecoder
from nas.models.encoder import Encoder
from nas.models.head import DepthHead
from nas.models.upsample import resize_to, upsample_bilinear

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Bumped whenever the same `Arch` starts to export a different graph (the latency cache keys on it).
# 3: ESA's max-pool pads its border explicitly (blocks/esa.py).
# 4: the depth map's upsampling by a whole factor is a convolution + depth-to-space (upsample_bilinear); edge
#    pads (that one, ESA's) are slices + concatenations.
# 5: pixel shuffles after a convolution export in DCR order, TFLite's own DEPTH_TO_SPACE (onnx_export).
GRAPH_VERSION = 5


def internal_size(input_scale: str, height: int, width: int) -> tuple[int, int]:
    """Internal (H, W) of the network for an input of (height, width)."""
    if "x" in input_scale:
        h, w = input_scale.split("x")
        return int(h), int(w)
    scale = float(input_scale)
    return max(round(height * scale), MIN_INTERNAL_SIDE), max(round(width * scale), MIN_INTERNAL_SIDE)


class DepthNet(nn.Module):
    def __init__(self, arch: Arch, pretrained_file: str | Path | None = None):
        """`pretrained_file`: the encoder's starting weights (checked by `nas.models.pretrained`); None: random."""
        super().__init__()
        self.arch = arch
        self.encoder = Encoder(arch.backbone, arch.depth, pretrained_file)
        self.decoder = UNetDecoder(self.encoder.channels, arch.decoder_channels, arch.skips, arch.blocks,
                                   arch.upsample, arch.ffm, arch.rfdb_esa)
        self.head = DepthHead(self.decoder.out_channels, arch.head, arch.max_depth)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.register_buffer("inv_std", 1.0 / (torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255.0),
                             persistent=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """image: (N, 3, H, W) float RGB 0..255 -> depth (N, 1, H, W) in metres."""
        out_size = (int(image.shape[2]), int(image.shape[3]))
        size = internal_size(self.arch.input_scale, *out_size)
        # Resize first, then normalise: bilinear weights sum to one, so the order does not change the
        # result, but normalising the small image instead of the 640×480 one cut LiteDepth's TFLite
        # latency from 5.1 to 3.2 ms on a 2-core x86 (benchmarks/latency_floor.md).
        x = resize_to(image, size, "bilinear")
        x = (x - self.mean) * self.inv_std
        depth = self.head(self.decoder(self.encoder(x), size))
        return upsample_bilinear(depth, out_size)
