"""Training on a GPU at the `full` budget: speed, memory and accuracy of each way to run a step.

For the seed presets (candidates: crops at their deployed pixel scale, 320×240 internal, batch 16)
and the full-budget teacher (ResNet-50 U-Net on whole frames at 480×360, batch 16), each trained
from the same seed for the same steps in each mode:

- fp32: plain float32, batches made on the training thread;
- fp32+prefetch: batches made ahead on a thread, in pinned memory;
- bf16+prefetch: bf16 autocast of the forward pass;
- cl+prefetch: channels-last tensors;
- bf16+cl+prefetch: both.

Per run: steps per second (after a warm-up run of the same model and mode), peak GPU memory, the
share of the loop spent waiting for batches, mean GPU utilisation (NVML, sampled every 50 ms) and
the validation si-RMSE at 640×480 after training (does the mode hurt accuracy?). The steps a
`full` trial, a `full` teacher and `nas finalize` would take are extrapolated from the rates.

Usage (on a machine with CUDA; the data set is rendered first, on the CPU):
  python benchmarks/gpu_training.py [--steps 300] [--work /tmp/gpu_training] [--out FILE]
  python benchmarks/gpu_training.py --cpu-dry-run   # a few steps on the CPU: checks the script, measures nothing
Writes benchmarks/results/gpu_training/<date>.json (or --out) after every run.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from pathlib import Path
from statistics import mean

import timm
import torch

from nas.config import BUDGETS, Budget
from nas.data.frames import open_split
from nas.data.synth import synthesize
from nas.models import DepthNet, count_params
from nas.presets import PRESETS
from nas.teacher import TEACHER_BUDGETS, teacher_arch
from nas.train.batches import PixelScaleBatches, WholeFrameBatches, training_crop
from nas.train.loop import StepOptions, train, validate

from common import results_path, write_result

MODES: dict[str, StepOptions] = {
    "fp32": StepOptions(),
    "fp32+prefetch": StepOptions(prefetch=True),
    "bf16+prefetch": StepOptions(bf16_autocast=True, prefetch=True),
    "cl+prefetch": StepOptions(channels_last=True, prefetch=True),
    "bf16+cl+prefetch": StepOptions(bf16_autocast=True, channels_last=True, prefetch=True),
}


class UtilisationSampler:
    """Mean GPU utilisation (%) over a block, sampled through NVML on a thread; None without NVML."""

    def __init__(self, device_index: int, every_s: float = 0.05):
        self.every_s = every_s
        self.samples: list[int] = []
        self._stop = threading.Event()
        try:
            import pynvml

            pynvml.nvmlInit()
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(device_index)
            self._read = lambda: pynvml.nvmlDeviceGetUtilizationRates(self._handle).gpu
        except Exception:  # no NVML (CPU dry run, or a driver without it): utilisation is not reported
            self._read = None

    def __enter__(self) -> UtilisationSampler:
        if self._read is not None:
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            self.samples.append(int(self._read()))

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._read is not None:
            self._thread.join()

    @property
    def mean(self) -> float | None:
        return mean(self.samples) if self.samples else None


def run_one(name: str, make_model, make_batches, budget: Budget, val, device: torch.device, options: StepOptions,
            warmup_steps: int) -> dict:
    """Warm up a throwaway copy (kernel selection, allocator), then time a fresh model from seed 0."""
    warm = budget.model_copy(update={"steps": warmup_steps, "eval_points": 1})
    train(make_model(), make_batches(), warm, seed=1, device=device, options=options)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    model = make_model()
    with UtilisationSampler(device.index or 0) as util:
        result = train(model, make_batches(), budget.model_copy(update={"eval_points": 1}), seed=0, device=device,
                       options=options)
        if device.type == "cuda":
            torch.cuda.synchronize()
    si = validate(model, val, device)
    return {"model": name, "steps": result.steps, "seconds": result.seconds,
            "steps_per_s": result.steps / result.seconds,
            "data_wait_share": result.data_wait_seconds / result.seconds,
            "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None,
            "gpu_utilisation_pct": util.mean, "val_si_rmse": si, "final_loss": result.final_loss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--models", nargs="+", default=[*PRESETS, "teacher"])
    parser.add_argument("--modes", nargs="+", default=list(MODES))
    parser.add_argument("--train-images", type=int, default=160)
    parser.add_argument("--work", type=Path, default=Path("/tmp/gpu_training"))
    parser.add_argument("--out", type=Path, default=None,
                        help="result file (default: benchmarks/results/gpu_training/<UTC date and time>.json)")
    parser.add_argument("--cpu-dry-run", action="store_true", help="tiny run on the CPU to check the script")
    args = parser.parse_args()
    args.out = args.out or results_path("gpu_training", suffix="-cpu-dry-run" if args.cpu_dry_run else "")
    if args.cpu_dry_run:
        device = torch.device("cpu")
        args.steps, args.warmup, args.train_images = 2, 1, 8
    elif not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this benchmark measures GPU training (use --cpu-dry-run to check it)")
    else:
        device = torch.device("cuda")
    started = time.time()
    data = args.work / "data"
    if not (data / "train").is_dir():
        synthesize(data, {"train": args.train_images, "validation": 16, "test": 0}, seed=0, width=640, height=480,
                   workers=os.cpu_count() or 1)
    cache = args.work / "frames"
    train_frames = open_split(data, "train", cache, (640, 480), None)
    val = open_split(data, "validation", cache, (640, 480), 4 if args.cpu_dry_run else None)
    student_budget = BUDGETS["full"].model_copy(update={"steps": args.steps})
    teacher_budget = TEACHER_BUDGETS["full"].model_copy(update={"steps": args.steps})
    if args.cpu_dry_run:
        student_budget = student_budget.model_copy(update={"batch_size": 2})
        teacher_budget = teacher_budget.model_copy(update={"batch_size": 2, "train_height": 96, "train_width": 128})
    teacher_frames = open_split(data, "train", cache, (teacher_budget.train_width, teacher_budget.train_height), None)
    runs = []
    for name in args.models:
        if name == "teacher":
            arch, budget = teacher_arch("resnet50"), teacher_budget
            make_batches = lambda: WholeFrameBatches(teacher_frames, budget.batch_size)  # noqa: E731
        else:
            arch, budget = PRESETS[name], student_budget
            crop = training_crop(arch.input_scale, (budget.train_height, budget.train_width), (480, 640))
            make_batches = lambda crop=crop, budget=budget: PixelScaleBatches(  # noqa: E731
                train_frames, budget.batch_size, crop)
        for mode in args.modes:
            try:
                figures = run_one(name, lambda arch=arch: DepthNet(arch), make_batches, budget, val, device,
                                  MODES[mode], args.warmup)
            except Exception as error:  # one mode failing for one model must not cost the other runs
                figures = {"model": name, "error": f"{type(error).__name__}: {error}"}
            figures.update(mode=mode, params=count_params(DepthNet(arch)), batch_size=budget.batch_size,
                           resolution=f"{budget.train_width}x{budget.train_height} internal")
            runs.append(figures)
            print(json.dumps(figures), flush=True)
            write(args, device, runs, started)
    write(args, device, runs, started)


def summarise(runs: list[dict]) -> dict:
    """Per mode: speed-up over fp32 (mean over models), si-RMSE change, and what a full budget would take."""
    by = {(r["model"], r["mode"]): r for r in runs}
    models = sorted({r["model"] for r in runs})
    summary = {}
    for mode in MODES:
        pairs = [(by[(m, mode)], by[(m, "fp32")]) for m in models
                 if "error" not in by.get((m, mode), {"error": 1}) and "error" not in by.get((m, "fp32"), {"error": 1})]
        if not pairs:
            continue
        summary[mode] = {
            "speedup_vs_fp32_mean": mean(a["steps_per_s"] / b["steps_per_s"] for a, b in pairs),
            "speedup_vs_fp32_per_model": {a["model"]: a["steps_per_s"] / b["steps_per_s"] for a, b in pairs},
            "si_rmse_change_vs_fp32_mean": mean(a["val_si_rmse"] - b["val_si_rmse"] for a, b in pairs),
            "data_wait_share_mean": mean(a["data_wait_share"] for a, _ in pairs),
            "gpu_utilisation_pct_mean": (mean(a["gpu_utilisation_pct"] for a, _ in pairs)
                                         if all(a["gpu_utilisation_pct"] is not None for a, _ in pairs) else None),
        }
    full = {}
    for r in (r for r in runs if "error" not in r):
        steps = TEACHER_BUDGETS["full"].steps if r["model"] == "teacher" else BUDGETS["full"].steps
        full.setdefault(r["model"], {})[r["mode"]] = steps / r["steps_per_s"] / 60
    return {"modes": summary, "full_budget_training_minutes": full}


def write(args: argparse.Namespace, device: torch.device, runs: list[dict], started: float) -> None:
    result = {
        "machine": {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                    "torch": torch.__version__, "timm": timm.__version__},
        "minutes": (time.time() - started) / 60,
        "runs": runs, "summary": summarise(runs),
    }
    write_result("gpu_training", result, path=args.out)  # after every run: a time limit keeps what finished


if __name__ == "__main__":
    main()
