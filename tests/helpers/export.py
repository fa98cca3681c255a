"""The smallest architecture worth converting: what the export tests build."""

from __future__ import annotations

from nas.arch import Arch

TINY = Arch(backbone="tf_mobilenetv3_small_minimal_100", depth=4, decoder_channels=(16, 16, 8, 8),
            skips=("concat", "add", "concat", "none"), blocks=("dws5", "conv", "srb", "conv"), upsample="bilinear",
            input_scale="0.5")
