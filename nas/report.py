"""`nas report`: a study's trials as a CSV, a latency / si-RMSE plot with the Pareto front, a summary."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402

from .config import RunConfig  # noqa: E402
from .study import load_study  # noqa: E402

COLUMNS = ("number", "state", "final_score", "si_rmse", "rmse", "log10", "rel", "latency_ms", "latency_p90_ms",
           "device", "params", "macs", "tflite_bytes", "backbone", "input_scale", "arch_id", "preset", "fail_reason")


def trial_rows(study: optuna.Study) -> list[dict]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        row = {c: a.get(c, "") for c in COLUMNS}
        row.update(number=t.number, state=t.state.name, backbone=a.get("arch", {}).get("backbone", ""),
                   input_scale=a.get("arch", {}).get("input_scale", ""),
                   preset=a.get("preset", ""))
        rows.append(row)
    return rows


def pareto_front(points: list[tuple[float, float, int]]) -> list[tuple[float, float, int]]:
    """Points (latency, si-RMSE, trial) not beaten on both axes, sorted by latency."""
    front, best = [], float("inf")
    for lat, err, num in sorted(points):
        if err < best:
            front.append((lat, err, num))
            best = err
    return front


def write_study_report(config: RunConfig, out: Path | None) -> Path:
    """Write trials.csv, pareto.png and summary.json of `config.study` into `out` (default results/reports/)."""
    study = load_study(config.storage_url, config.study)
    out = out or config.results / "reports" / config.study
    out.mkdir(parents=True, exist_ok=True)
    rows = trial_rows(study)
    with open(out / "trials.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    done = [r for r in rows if r["state"] == "COMPLETE" and r["latency_ms"] != ""]
    points = [(float(r["latency_ms"]), float(r["si_rmse"]), int(r["number"])) for r in done]
    front = pareto_front(points)
    fig, ax = plt.subplots(figsize=(7, 5))
    if points:
        ax.scatter([p[0] for p in points], [p[1] for p in points], c="tab:blue", label="trials")
        ax.plot([p[0] for p in front], [p[1] for p in front], "o-", c="tab:red", label="Pareto front")
        for lat, err, num in points:
            ax.annotate(str(num), (lat, err), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("latency (ms, median)")
    ax.set_ylabel("si-RMSE (TFLite, validation)")
    ax.set_xscale("log")
    ax.set_title(f"study {config.study}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "pareto.png", dpi=120)
    plt.close(fig)
    states = {}
    for r in rows:
        states[r["state"]] = states.get(r["state"], 0) + 1
    best = max(done, key=lambda r: float(r["final_score"] or "-inf"), default=None)
    summary = {"study": config.study, "trials": len(rows), "states": states,
               "best": best, "pareto_front_trials": [n for _, _, n in front]}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return out
