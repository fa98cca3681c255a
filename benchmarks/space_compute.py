"""How much of a search space lies above its compute cap: MACs of uniform random draws and of the presets.

Each draw is a candidate as `nas run` samples it (Optuna's RandomSampler on the space file), sized at
deployment resolution on PyTorch's meta device (`nas.trial.latency_model.arch_figures`: no weights, no
arithmetic), so the figures come in seconds. They size `max_mmacs` in `search_spaces/mai2021.yaml`.

    .venv/bin/python benchmarks/space_compute.py --draws 300

Writes benchmarks/results/space_compute/<date>.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import optuna

from nas.arch import ArchError
from nas.trial.latency_model import arch_figures
from nas.presets import PRESETS
from nas.space import load_space

from common import write_result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", type=Path, default=Path("search_spaces/mai2021.yaml"))
    parser.add_argument("--draws", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--out", type=Path, default=None,
                        help="result file (default: benchmarks/results/space_compute/<UTC date and time>.json)")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = load_space(args.space)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=args.seed))
    mmacs, unbuildable = [], 0
    started = time.perf_counter()
    for _ in range(args.draws):
        trial = study.ask()
        try:
            arch, _ = space.sample(trial)
            mmacs.append(arch_figures(arch, args.height, args.width)["macs"] / 1e6)
        except ArchError:
            unbuildable += 1
        study.tell(trial, 0.0)
    seconds = time.perf_counter() - started
    values = np.array(mmacs)
    cap = space.max_mmacs
    result = {
        "space": str(args.space), "seed": args.seed, "max_mmacs": cap, "draws": args.draws, "unbuildable": unbuildable,
        "seconds_per_draw": seconds / args.draws,
        "mmacs_percentiles": {str(q): float(np.percentile(values, q)) for q in (5, 10, 25, 50, 75, 90)},
        "share_above_cap": None if cap is None else float(np.mean(values > cap)),
        "share_at_or_below": {str(c): float(np.mean(values <= c)) for c in (100, 200, 300, 500, 1000)},
        "presets_mmacs": {name: arch_figures(arch, args.height, args.width)["macs"] / 1e6
                          for name, arch in PRESETS.items()},
    }
    write_result("space_compute", result, path=args.out)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
