"""How well the latency predictor ranks and bounds a study's graphs, with and without an operator count.

The predictor (`nas/trial/latency_model.py`) fits latency ≈ fixed + a·MACs + b·activations per precision on
the study's own measurements. On the small graphs the searches keep (1–2 ms on this machine) most of
the time is neither: every operator costs a dispatch, and data-movement operators (concatenations,
slices, resizes, depth-to-space) cost memory passes the MAC count does not see. This script replays
leave-one-out predictions on the measured graphs of finished studies, for the current terms and for
the same terms plus the count of operators the graph runs, or plus the elements its data-movement
operators write (both counted on PyTorch's meta device: no weights, nothing converted), and reports what `time_before_training: auto` depends on:
rank correlation, the share within ±10 %, and the worst under-prediction (the upper bound's margin).

    .venv/bin/python benchmarks/latency_predictor.py results/benchmarks/search_quality/tpe-timed-s4.db ...

Each argument is a SQLite study file (the study named after the file). Writes
benchmarks/results/latency_predictor/<date>.json (or --out) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import optuna
import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import results_path, write_result  # noqa: E402
from nas.arch import Arch  # noqa: E402
from nas.trial.latency_model import fit_latency_model, spearman  # noqa: E402
from nas.models import DepthNet  # noqa: E402
from nas.trial.record import measured_latency_ms  # noqa: E402


# PyTorch operators a converted graph does not run: allocations and views, batch norm (folded into the
# convolution before it) and ReLU (fused into the operator before it).
FREE_OPS = frozenset({"empty", "zeros", "lift_fresh", "_to_copy", "detach", "alias", "view", "_unsafe_view",
                      "unsqueeze", "squeeze", "expand", "native_batch_norm", "_native_batch_norm_legit_no_training",
                      "relu", "relu_"})
# Operators that move data without arithmetic to speak of: their cost is memory passes, not MACs.
DATA_MOVEMENT_OPS = frozenset({"cat", "slice", "constant_pad_nd", "upsample_bilinear2d", "upsample_nearest2d",
                               "pixel_shuffle", "permute", "clone"})


class OpCounter(TorchDispatchMode):
    """Counts the operators a forward pass runs and the elements each kind writes."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[str] = Counter()
        self.elements: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        self.calls[name] += 1
        if isinstance(out, torch.Tensor):
            self.elements[name] += out.numel()
        return out


@torch.no_grad()
def operator_figures(arch: Arch, height: int, width: int) -> dict[str, int]:
    """Operators one frame runs through once converted (FREE_OPS left out), and the elements written by
    data-movement operators; on the meta device, so nothing is computed."""
    with torch.device("meta"):
        model = DepthNet(arch).eval()
    counter = OpCounter()
    with counter:
        model(torch.zeros(1, 3, height, width, device="meta"))
    return {"ops": sum(n for name, n in counter.calls.items() if name not in FREE_OPS),
            "moved": sum(n for name, n in counter.elements.items() if name in DATA_MOVEMENT_OPS)}


def measured_graphs(storage_file: Path) -> list[dict]:
    """One row per measured graph of the study: its arch, figures and latency (as `latency_points` reads)."""
    study = optuna.load_study(study_name=storage_file.stem, storage=f"sqlite:///{storage_file.as_posix()}")
    rows: dict[str, dict] = {}
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)):
        a = t.user_attrs
        ms = measured_latency_ms(a)
        if ms and "arch" in a and {"macs", "activations"} <= set(a):
            rows[a["arch_id"]] = {"arch": a["arch"], "macs": a["macs"], "activations": a["activations"],
                                  "int8": a["arch"].get("precision") == "int8", "latency_ms": ms}
    return list(rows.values())


def design(rows: list[dict], terms: tuple[str, ...]) -> np.ndarray:
    """A fixed cost, then each term (in millions) for fp32 graphs, then for int8 graphs."""
    out = []
    for r in rows:
        work = [r[t] / 1e6 for t in terms]
        zeros = [0.0] * len(terms)
        out.append([1.0, *(zeros if r["int8"] else work), *(work if r["int8"] else zeros)])
    return np.array(out)


def leave_one_out(rows: list[dict], terms: tuple[str, ...]) -> np.ndarray:
    """Prediction / truth for each graph, fitted as the predictor fits (`fit_latency_model`) on all the others."""
    x, y = design(rows, terms), np.array([r["latency_ms"] for r in rows])
    ratios = []
    for i in range(len(rows)):
        keep = np.arange(len(rows)) != i
        ratios.append(float(x[i] @ fit_latency_model(x[keep], y[keep]) / y[i]))
    return np.array(ratios)


VARIANTS = {"MACs + activations (now)": ("macs", "activations"),
            "+ operator count": ("macs", "activations", "ops"),
            "+ elements moved by data-movement operators": ("macs", "activations", "moved")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("studies", nargs="+", type=Path)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--out", type=Path, default=None,
                        help="result file (default: benchmarks/results/latency_predictor/<UTC date and time>.json)")
    args = parser.parse_args()
    results = {}
    for path in args.studies:
        rows = measured_graphs(path)
        for r in rows:
            figures = operator_figures(Arch.from_dict(r["arch"]), args.height, args.width)
            r["ops"], r["moved"] = figures["ops"] * 1e6, figures["moved"]  # design() divides by 1e6: ops as counted
        y = np.array([r["latency_ms"] for r in rows])
        study = {"graphs": len(rows), "latency_ms_range": [float(y.min()), float(y.max())], "variants": {}}
        for name, terms in VARIANTS.items():
            loo = leave_one_out(rows, terms)
            study["variants"][name] = {
                "spearman": spearman(loo * y, y), "within_10pct": float(np.mean(np.abs(loo - 1) <= 0.10)),
                "median_abs_error": float(np.median(np.abs(loo - 1))),
                "worst_under_prediction": float(1 / loo.min()), "worst_over_prediction": float(loo.max())}
        results[path.stem] = study
    write_result("latency_predictor", {"studies": results}, path=args.out or results_path("latency_predictor"))
    print("| study | graphs | terms | Spearman | within ±10 % | median error | worst under | worst over |")
    print("|---|---|---|---|---|---|---|---|")
    for stem, study in results.items():
        for name, v in study["variants"].items():
            print(f"| {stem} | {study['graphs']} | {name} | {v['spearman']:.2f} | {v['within_10pct']:.0%} "
                  f"| {v['median_abs_error']:.0%} | {v['worst_under_prediction']:.2f}× | {v['worst_over_prediction']:.2f}× |")


if __name__ == "__main__":
    main()
