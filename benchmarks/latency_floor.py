"""Where does a small network's on-device time go? The graph's fixed costs against the network itself.

At LiteDepth's size (MobileNetV3-Small at 128×160 inside a 640×480 graph) the network is a few
milliseconds, so the work every graph does whatever its architecture (resize the 640×480 input,
normalise it, resize the depth back to 640×480) decides how far the search can go below it. This
times, on this machine, untrained fp32 `.tflite` files of:

- `floor`: input resize + normalisation + a 1×1 convolution + output resize: no network at all;
- `litedepth-norm-first`: LiteDepth normalising the 640×480 input before resizing it (the graph
  before `GRAPH_VERSION` 2) and `litedepth`: resizing first, as `DepthNet` does now;
- `litedepth-out-nearest`: the output resized with nearest instead of bilinear;
- cheap-corner points of the space: LiteDepth at 96×128, and half-width backbones
  (`lcnet_050`, `mobilenetv3_small_050`) with LiteDepth's decoder, and one at 96×128 with a
  narrower decoder;
- the output upsampling (`--set output`): the depth map's bilinear upsampling by a whole factor as
  RESIZE_BILINEAR (`*-resize`, graph version 3) against a constant 3×3 convolution + DEPTH_TO_SPACE
  (`DepthNet` since graph version 4, `upsample_bilinear`), for the fixed costs alone at 48×64 and
  96×128, LiteDepth at 96×128 and a searched network at 48×64 (`mnasnet-48x64`);
- DEPTH_TO_SPACE (`--set depth-to-space`): PyTorch's pixel shuffle exported as it comes (CRD order,
  which onnx2tf lowers to reshape + transpose + reshape: `*-crd`) against the convolution's channels
  reordered to DCR, which becomes TFLite's own DEPTH_TO_SPACE (`export_onnx` since graph version 5), for
  LiteDepth at 24×32 and 48×64, a searched network at 48×64 (`ghostnet-48x64`), and LiteDepth at 48×64
  with pixel-shuffle upsampling in the decoder too; fp32, and int8 (`*-int8`) for two of them.

Every file is timed with `hardware/runner.py` (2 threads, 5 warm-up + 30 timed invokes per call) in
interleaved rounds (order rotated each round); latency is the median of a file's round medians.

Usage: python benchmarks/latency_floor.py [--set floor|output|depth-to-space] [--rounds 7]
                                         [--workdir results/benchmarks/latency_floor]
Writes benchmarks/results/latency_floor/<date>-<set>.json (or --out); benchmarks/latency_floor.md says
which searches the two searched networks come from.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from common import results_path, write_result
from helpers import LITEDEPTH, SEARCHED_GHOSTNET_48X64, convert_variants, time_once, untrained_model
from nas.arch import Arch
from nas.data.synth import render_scene
from nas.models.depthnet import DepthNet, internal_size
from nas.models.upsample import resize_to, upsample_bilinear


class FixedCostsOnly(torch.nn.Module):
    """What every graph does, and a 1×1 convolution so there is something to run in between."""

    def __init__(self, internal_hw: tuple[int, int], subpixel: bool = False):
        super().__init__()
        self.internal_hw = internal_hw
        self.conv = torch.nn.Conv2d(3, 1, 1)
        self.subpixel = subpixel  # the output upsampled as DepthNet does since graph version 4

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        out_hw = (int(image.shape[2]), int(image.shape[3]))
        x = (resize_to(image, self.internal_hw, "bilinear") - 114.0) / 58.0
        depth = torch.relu(self.conv(x))
        return upsample_bilinear(depth, out_hw) if self.subpixel else resize_to(depth, out_hw, "bilinear")


class NormaliseFirst(DepthNet):
    """`DepthNet` as it was before graph version 2: normalise at 640×480, then resize."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        out_hw = (int(image.shape[2]), int(image.shape[3]))
        size = internal_size(self.arch.input_scale, *out_hw)
        x = resize_to((image - self.mean) * self.inv_std, size, "bilinear")
        return resize_to(self.head(self.decoder(self.encoder(x), size)), out_hw, "bilinear")


class ResizedOutput(DepthNet):
    """`DepthNet` with the depth map resized to the input's size by RESIZE_BILINEAR (as before graph
    version 4) or nearest neighbour."""

    def __init__(self, arch: Arch, mode: str = "bilinear"):
        super().__init__(arch)
        self.mode = mode

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        out_hw = (int(image.shape[2]), int(image.shape[3]))
        size = internal_size(self.arch.input_scale, *out_hw)
        x = (resize_to(image, size, "bilinear") - self.mean) * self.inv_std
        return resize_to(self.head(self.decoder(self.encoder(x), size)), out_hw, self.mode)


# A searched network at 48x64 inside: small enough that the depth map's upsampling to 640x480 is a large
# share of its time, which is what the output set measures.
SEARCHED_MNASNET_48X64 = Arch(backbone="mnasnet_100", depth=4, decoder_channels=(32, 32, 24, 8),
                              skips=("concat", "concat", "add", "none"), blocks=("srb", "dws5", "dws5", "srb"),
                              ffm=True, upsample="transpose", input_scale="0.1", head="sigmoid")


def output_variants() -> dict[str, Callable[[], torch.nn.Module]]:
    """RESIZE_BILINEAR against convolution + DEPTH_TO_SPACE for the depth map's last upsampling."""
    litedepth_96 = dataclasses.replace(LITEDEPTH, input_scale="96x128")
    return {
        "floor-48x64-resize": lambda: FixedCostsOnly((48, 64)),
        "floor-48x64": lambda: FixedCostsOnly((48, 64), subpixel=True),
        "floor-96x128-resize": lambda: FixedCostsOnly((96, 128)),
        "floor-96x128": lambda: FixedCostsOnly((96, 128), subpixel=True),
        "litedepth-96x128-resize": lambda: ResizedOutput(litedepth_96),
        "litedepth-96x128": lambda: untrained_model(litedepth_96),
        "mnasnet-48x64-resize": lambda: ResizedOutput(SEARCHED_MNASNET_48X64),
        "mnasnet-48x64": lambda: untrained_model(SEARCHED_MNASNET_48X64),
    }


def depth_to_space_variants() -> dict[str, Callable[[], torch.nn.Module]]:
    """Each network twice: `-crd` is exported without the DCR rewrite (as before graph version 5)."""
    networks = {"litedepth-24x32": dataclasses.replace(LITEDEPTH, input_scale="0.05"),
                "litedepth-48x64": dataclasses.replace(LITEDEPTH, input_scale="0.1"),
                "ghostnet-48x64": SEARCHED_GHOSTNET_48X64,
                "litedepth-48x64-pixelshuffle": dataclasses.replace(LITEDEPTH, input_scale="0.1",
                                                                    upsample="pixelshuffle")}
    built = {}
    for name, arch in networks.items():
        precisions = ("fp32", "int8") if name in ("litedepth-24x32", "litedepth-48x64-pixelshuffle") else ("fp32",)
        for precision in precisions:
            for order in ("-crd", ""):
                built[f"{name}{'-int8' if precision == 'int8' else ''}{order}"] = \
                    lambda arch=arch: untrained_model(arch)
    return built


def variants() -> dict[str, Callable[[], torch.nn.Module]]:
    replace = dataclasses.replace
    return {
        "floor": lambda: FixedCostsOnly((128, 160)),
        "litedepth-norm-first": lambda: NormaliseFirst(LITEDEPTH),
        "litedepth": lambda: untrained_model(LITEDEPTH),
        "litedepth-out-nearest": lambda: ResizedOutput(LITEDEPTH, "nearest"),
        "litedepth-96x128": lambda: untrained_model(replace(LITEDEPTH, input_scale="96x128")),
        "lcnet_050-128x160": lambda: untrained_model(replace(LITEDEPTH, backbone="lcnet_050")),
        "mobilenetv3_small_050-128x160": lambda: untrained_model(replace(LITEDEPTH, backbone="mobilenetv3_small_050")),
        "lcnet_050-96x128-narrow": lambda: untrained_model(replace(LITEDEPTH, backbone="lcnet_050", input_scale="96x128",
                                                                   decoder_channels=(32, 16, 16, 8, 8))),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", choices=("floor", "output", "depth-to-space"), default="floor")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--workdir", type=Path, default=Path("results/benchmarks/latency_floor"))
    parser.add_argument("--out", type=Path, default=None,
                        help="result file (default: benchmarks/results/latency_floor/<UTC date and time>-<set>.json)")
    args = parser.parse_args()
    out = args.out or results_path("latency_floor", suffix=f"-{args.set}")
    builders = {"floor": variants, "output": output_variants, "depth-to-space": depth_to_space_variants}[args.set]()
    files, convert_s = convert_variants(builders, args.workdir)
    medians: dict[str, list[float]] = {name: [] for name in files}
    loads = []
    for index in range(args.rounds):
        names = list(files)
        loads.append(round(os.getloadavg()[0], 2))
        for name in names[index % len(names):] + names[:index % len(names)]:
            medians[name].append(round(time_once(str(files[name]), 2, 5, 30)["median_ms"], 3))
    result = {
        "set": args.set, "rounds": args.rounds,
        "loadavg_1m_per_round": loads,
        "variants": {name: {"median_ms": statistics.median(v), "round_medians_ms": v,
                            "convert_seconds": convert_s.get(name)} for name, v in medians.items()},
    }
    if args.set == "depth-to-space":  # differences of a few hundredths of a ms: the runner's rounds are too noisy
        result["in_process"] = {f"{threads}_threads": time_in_process(files, args.rounds, threads)
                                for threads in (1, 2)}
        for setting, rows in result["in_process"].items():
            for name, row in rows.items():
                if name.endswith("-crd"):
                    row_dcr = rows[name.removesuffix("-crd")]
                    row_dcr["vs_crd"] = round(row_dcr["median_ms"] / row["median_ms"], 3)
    write_result("latency_floor", result, path=out)
    for name, row in result["variants"].items():
        print(f"{name:32s} {row['median_ms']:7.3f} ms")
    for setting, rows in result.get("in_process", {}).items():
        for name, row in rows.items():
            print(f"in process, {setting}: {name:40s} {row['median_ms']:7.3f} ms  {row.get('vs_crd', '')}")


def time_in_process(files: dict[str, Path], rounds: int, threads: int, invokes: int = 100) -> dict[str, dict]:
    """Every file loaded once in this process, then rounds of `invokes` timed invokes each (order reversed
    every other round): no process start-up or model load between the figures compared."""
    from ai_edge_litert.interpreter import Interpreter

    interpreters = {}
    for name, path in files.items():
        interpreter = Interpreter(model_path=str(path), num_threads=threads)
        interpreter.allocate_tensors()
        detail = interpreter.get_input_details()[0]
        interpreter.set_tensor(detail["index"], render_scene(0, 640, 480)[0][None].astype(detail["dtype"]))
        for _ in range(20):
            interpreter.invoke()
        interpreters[name] = interpreter
    medians: dict[str, list[float]] = {name: [] for name in files}
    for index in range(rounds):
        for name in list(files)[::1 if index % 2 else -1]:
            times = []
            for _ in range(invokes):
                start = time.perf_counter()
                interpreters[name].invoke()
                times.append(time.perf_counter() - start)
            medians[name].append(round(statistics.median(times) * 1000, 3))
    return {name: {"median_ms": statistics.median(v), "round_medians_ms": v} for name, v in medians.items()}


if __name__ == "__main__":
    main()
