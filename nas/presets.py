"""The MAI 2021 seed architectures as named `Arch` presets.

Each team's network is described in the challenge report (Ignatov et al., "Fast and Accurate
Single-Image Depth Estimation on Mobile Devices, Mobile AI 2021 Challenge: Report", CVPR Workshops
2021); LiteDepth in the next year's report (Ignatov et al., "Efficient Single-Image Depth Estimation
on Mobile Devices, Mobile AI & AIM 2022 Challenge: Report", ECCV Workshops 2022).

Each is a point of `search_spaces/mai2021.yaml`; `nas run --enqueue-baselines` enqueues them first,
so every study shows where the hand-designed networks stand.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from nas.arch import PRECISIONS, Arch, ArchError
from nas.errors import ConfigError, not_utf8

PRESETS: dict[str, Arch] = {
    # Cheapest first (MACs at 640×480): `--enqueue-baselines` runs them in this order.
    # LiteDepth (MAI 2022): MobileNetV3-Small-minimal at 128×160 internal, concat skips, light decoder.
    "litedepth": Arch(backbone="tf_mobilenetv3_small_minimal_100", depth=5, decoder_channels=(64, 32, 24, 16, 16),
                      skips=("concat", "concat", "concat", "concat", "none"), blocks=("dws5",) * 5,
                      upsample="bilinear", input_scale="128x160", head="relu"),
    # Airia-Team1: MobileNetV3 features refined by RFDB and SRB blocks (RFDN: Liu et al., ECCV Workshops 2020),
    # pixel-shuffle upsampling.
    "airia_rfdb": Arch(backbone="mobilenetv3_large_100", depth=5, decoder_channels=(128, 64, 32, 32, 16),
                       skips=("concat", "concat", "concat", "concat", "none"),
                       blocks=("rfdb", "rfdb", "rfdb", "srb", "srb"), rfdb_esa=True, upsample="pixelshuffle",
                       input_scale="0.5", head="relu"),
    # Tencent GY-Lab (1st): MobileNetV3 U-Net, concatenated skips, FFM over all decoder levels.
    "tencent_gylab": Arch(backbone="mobilenetv3_large_100", depth=5, decoder_channels=(128, 64, 32, 24, 16),
                          skips=("concat", "concat", "concat", "concat", "none"), blocks=("conv",) * 5, ffm=True,
                          upsample="bilinear", input_scale="0.5", head="relu"),
    # HIT-AIIA: EfficientNet-B1 U-Net, the only non-MobileNet entry.
    "hit_aiia": Arch(backbone="efficientnet_b1", depth=5, decoder_channels=(256, 128, 64, 32, 16),
                     skips=("concat", "concat", "concat", "concat", "none"), blocks=("conv",) * 5,
                     upsample="nearest", input_scale="0.5", head="relu"),
    # SMART (2nd): FastDepth (Wofk et al., ICRA 2019), MobileNetV1 + five NNConv5 stages 512..32, additive skips.
    "fastdepth": Arch(backbone="mobilenetv1_100", depth=5, decoder_channels=(512, 256, 128, 64, 32),
                      skips=("add", "add", "add", "add", "none"), blocks=("dws5",) * 5, upsample="nearest",
                      input_scale="1", head="relu"),
}


def preset_variants(precisions: Sequence[str] = PRECISIONS) -> dict[str, Arch]:
    """Every seed preset in each of `precisions`, named `preset` (fp32) or `preset-<precision>`, in `PRESETS`
    order: the names `baselines` accepts and the points `--enqueue-baselines` enqueues."""
    return {name if p == "fp32" else f"{name}-{p}": dataclasses.replace(arch, precision=p)
            for name, arch in PRESETS.items() for p in precisions}


def resolve_arch(name_or_json: str) -> Arch:
    """A preset name, an arch JSON string, or the path of an arch JSON file; ConfigError names the file (or says
    "arch JSON" for a string) and what is wrong."""
    from pathlib import Path

    if name_or_json in PRESETS:
        return PRESETS[name_or_json]
    if name_or_json.lstrip().startswith("{"):
        try:
            return Arch.from_json(name_or_json)
        except ArchError as exc:
            raise ConfigError(None, f"arch JSON: {exc}") from None
    path = Path(name_or_json)
    if not path.is_file():
        raise ConfigError(None, f"{name_or_json!r} is neither a preset ({', '.join(PRESETS)}), arch JSON, nor a file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise not_utf8(path, exc) from None
    except OSError as exc:
        raise ConfigError(path, f"cannot read the file ({exc.strerror or exc})") from None
    try:
        return Arch.from_json(text)
    except ArchError as exc:
        raise ConfigError(path, str(exc)) from None
