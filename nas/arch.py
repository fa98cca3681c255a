"""`Arch`: the one value that describes a depth network.

Everything downstream (built models, exported files, latency measurements, trial records) is keyed by
an `Arch` or by the `.tflite` it produced, so it must be frozen, JSON-serialisable and carry a stable
content hash. Trial params map to an `Arch` (`Arch.from_params`) and back (`Arch.to_params`), which
is how seed presets are enqueued as ordinary trials.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers
from dataclasses import dataclass
from typing import Any

SKIP_TYPES = ("none", "add", "concat")
BLOCK_TYPES = ("conv", "dws5", "srb", "rfdb")
UPSAMPLE_TYPES = ("nearest", "bilinear", "pixelshuffle", "transpose")
HEAD_TYPES = ("relu", "softplus", "sigmoid")
# An input scale is a ratio in (0, 1] ("1", "0.5", "0.25") of the deployment input, or "HxW", a fixed internal
# size (LiteDepth's 128x160) with each side a multiple of 32 so every encoder level has a whole size.
MIN_INTERNAL_SIDE = 8  # pixels: the smallest internal image a network runs at (`nas.models.depthnet.internal_size`)
MAX_DEPLOY_SIDE = 8192  # pixels: the largest deployment image side a run accepts (`deploy_height`, `deploy_width`)
# A ratio this small gives an internal image under MIN_INTERNAL_SIDE even at the largest deployment size.
MIN_INPUT_RATIO = MIN_INTERNAL_SIDE / MAX_DEPLOY_SIDE
MAX_DECODER_CHANNELS = 4096  # per decoder stage; the widest preset has 256


def input_scale_problem(text: str) -> str | None:
    """Why `text` is not an input scale (a ratio in (0, 1] or "HxW", multiples of 32), or None."""
    if "x" in text:
        sides = text.split("x")
        if len(sides) == 2 and all(s.isdigit() and 32 <= int(s) <= 4096 and int(s) % 32 == 0 for s in sides):
            return None
        return f"input scale {text!r}: a fixed size is HxW with each side a multiple of 32 (e.g. 96x128)"
    try:
        ratio = float(text)
    except ValueError:
        return f"input scale {text!r} is neither a ratio such as '0.5' nor a size such as '128x160'"
    if not 0 < ratio <= 1:
        return f"input scale {text!r}: a ratio must lie in (0, 1]"
    if ratio < MIN_INPUT_RATIO:
        return (f"input scale {text!r}: the internal image would be under {MIN_INTERNAL_SIDE} pixels at any "
                f"deployment size up to {MAX_DEPLOY_SIDE}; the smallest ratio is 1/{MAX_DEPLOY_SIDE // MIN_INTERNAL_SIDE}")
    return None
# Numeric precision of the deployed `.tflite`: float32, or full-integer int8 weights and activations
# (float32 input and output kept, so the runner and the evaluation see the same interface).
PRECISIONS = ("fp32", "int8")


class ArchError(ValueError):
    """An architecture that cannot be built; the message says why."""


@dataclass(frozen=True)
class Arch:
    """A depth network: timm encoder, U-Net-style decoder, depth head.

    The decoder has one stage per encoder level used (`depth`); stage i (0 = deepest) upsamples to the
    next shallower level and merges that level's skip. `decoder_channels`, `skips` and `blocks` are
    per stage. The last stage has no encoder skip (it reaches the network's internal resolution).
    """

    backbone: str = "mobilenetv3_large_100"
    depth: int = 5
    decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16)
    skips: tuple[str, ...] = ("concat", "concat", "concat", "concat", "none")
    blocks: tuple[str, ...] = ("conv", "conv", "conv", "conv", "conv")
    ffm: bool = False
    upsample: str = "nearest"
    input_scale: str = "1"
    head: str = "relu"
    max_depth: float = 40.0
    rfdb_esa: bool = False
    precision: str = "fp32"

    def __post_init__(self) -> None:
        self._check_types()
        object.__setattr__(self, "decoder_channels", tuple(int(c) for c in self.decoder_channels))
        object.__setattr__(self, "skips", tuple(self.skips))
        object.__setattr__(self, "blocks", tuple(self.blocks))
        self.validate()

    def _check_types(self) -> None:
        """ArchError naming the field whose value has the wrong type (arch JSON is user input)."""
        def is_int(v: Any) -> bool:
            return isinstance(v, numbers.Integral) and not isinstance(v, bool)

        expected = {"backbone": (str, "a string"), "upsample": (str, "a string"), "input_scale": (str, "a string"),
                    "head": (str, "a string"), "precision": (str, "a string"), "ffm": (bool, "true or false"),
                    "rfdb_esa": (bool, "true or false")}
        for name, (kind, words) in expected.items():
            if not isinstance(getattr(self, name), kind):
                raise ArchError(f"{name} must be {words}, got {getattr(self, name)!r}")
        if not is_int(self.depth):
            raise ArchError(f"depth must be an integer, got {self.depth!r}")
        if isinstance(self.max_depth, bool) or not isinstance(self.max_depth, numbers.Real):
            raise ArchError(f"max_depth must be a number of metres, got {self.max_depth!r}")
        if not math.isfinite(self.max_depth) or self.max_depth <= 0:  # NaN would also print as bare `NaN` JSON
            raise ArchError(f"max_depth must be a finite number of metres above 0, got {self.max_depth!r}")
        if not isinstance(self.decoder_channels, (list, tuple)) or not all(map(is_int, self.decoder_channels)):
            raise ArchError(f"decoder_channels must be a list of integers, got {self.decoder_channels!r}")
        for name in ("skips", "blocks"):
            value = getattr(self, name)
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
                raise ArchError(f"{name} must be a list of names, got {value!r}")

    def validate(self) -> None:
        """Raise `ArchError` with the reason when the arch cannot be built."""
        if self.depth not in (3, 4, 5):
            raise ArchError(f"depth must be 3, 4 or 5, got {self.depth}")
        for name in ("decoder_channels", "skips", "blocks"):
            if len(getattr(self, name)) != self.depth:
                raise ArchError(f"{name} needs {self.depth} entries (one per decoder stage), "
                                f"got {len(getattr(self, name))}")
        if bad := [s for s in self.skips if s not in SKIP_TYPES]:
            raise ArchError(f"unknown skip type {bad[0]!r}; choose from {SKIP_TYPES}")
        if self.skips[-1] != "none":
            raise ArchError("the last decoder stage has no encoder skip; its skip must be 'none'")
        if bad := [b for b in self.blocks if b not in BLOCK_TYPES]:
            raise ArchError(f"unknown block type {bad[0]!r}; choose from {BLOCK_TYPES}")
        if self.upsample not in UPSAMPLE_TYPES:
            raise ArchError(f"unknown upsampling {self.upsample!r}; choose from {UPSAMPLE_TYPES}")
        if self.head not in HEAD_TYPES:
            raise ArchError(f"unknown head {self.head!r}; choose from {HEAD_TYPES}")
        if problem := input_scale_problem(self.input_scale):
            raise ArchError(problem)
        if self.precision not in PRECISIONS:
            raise ArchError(f"unknown precision {self.precision!r}; choose from {PRECISIONS}")
        for i, (ch, block) in enumerate(zip(self.decoder_channels, self.blocks)):
            if ch < 4:
                raise ArchError(f"decoder stage {i} has {ch} channels; at least 4 are needed")
            if ch > MAX_DECODER_CHANNELS:
                raise ArchError(f"decoder stage {i} has {ch} channels; at most {MAX_DECODER_CHANNELS}")
            if block == "rfdb" and ch % 2:
                raise ArchError(f"decoder stage {i}: RFDB splits its {ch} channels in halves;"
                                " the width must be even")

    @staticmethod
    def stage_defaults(depth: int) -> dict[str, tuple]:
        """Per-stage fields for `depth` stages when a space or params leave them out."""
        return {"decoder_channels": Arch.decoder_channels[-depth:], "skips": ("concat",) * (depth - 1) + ("none",),
                "blocks": ("conv",) * depth}

    # -- serialisation ---------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["decoder_channels"] = list(self.decoder_channels)
        d["skips"] = list(self.skips)
        d["blocks"] = list(self.blocks)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Arch:
        known = {f.name for f in dataclasses.fields(cls)}
        if unknown := set(d) - known:
            raise ArchError(f"unknown arch field(s): {', '.join(sorted(unknown))}")
        return cls(**d)

    @classmethod
    def from_json(cls, text: str) -> Arch:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ArchError(f"not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise ArchError("arch JSON must be an object of arch fields")
        return cls.from_dict(data)

    @property
    def arch_id(self) -> str:
        """Stable content hash: equal architectures share it across processes and machines."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    # -- trial params ----------------------------------------------------------------------------

    def to_params(self) -> dict[str, Any]:
        """Flat Optuna params (per-stage lists become `name_i`), the inverse of `from_params`."""
        params: dict[str, Any] = {}
        for key, value in self.to_dict().items():
            if isinstance(value, list):
                for i, v in enumerate(value):
                    params[f"{key}_{i}"] = v
            else:
                params[key] = value
        del params[f"skips_{self.depth - 1}"]  # always "none": not a free choice
        return params

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> Arch:
        """Build an Arch from flat trial params; params that are not arch fields are ignored."""
        depth = int(params.get("depth", cls.depth))
        kwargs: dict[str, Any] = {"depth": depth, **cls.stage_defaults(depth)}
        for f in dataclasses.fields(cls):
            if f.name in ("decoder_channels", "skips", "blocks"):
                n = depth - 1 if f.name == "skips" else depth
                keys = [f"{f.name}_{i}" for i in range(n)]
                if all(k in params for k in keys):
                    values = tuple(params[k] for k in keys)
                    kwargs[f.name] = (*values, "none") if f.name == "skips" else values
                elif any(k in params for k in keys):
                    missing = [k for k in keys if k not in params]
                    raise ArchError(f"params lack {', '.join(missing)}")
            elif f.name in params:
                kwargs[f.name] = params[f.name]
        return cls(**kwargs)
