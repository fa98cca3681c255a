"""Reading a study for the report: CSV rows, the trials that have a score, the Pareto front.

Figures come from the trial records (`nas.trial.record`), not `trial.value`: a Pareto study (two objectives)
has no single value, but every complete trial records its `final_score`, `si_rmse` and `latency_ms`. Which
trials are scored and which is best is `nas.trial.record`'s (`scored_trials`, `first_feasible`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from nas.trial.display import arch_line  # noqa: F401  (the report's pages import it from here)
from nas.trial.record import arch_of, attrs, by_score, encoder_weights_of, is_feasible, latency_of, preset_of, si_rmse_of

COLUMNS = ("number", "state", "final_score", "si_rmse", "rmse", "log10", "rel", "latency_ms", "latency_p90_ms",
           "device", "params", "macs", "tflite_bytes", "backbone", "input_scale", "precision", "encoder_weights",
           "arch_id", "preset", "feasible", "fail_reason")


def trial_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """One CSV row per trial, every state, in trial order."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        a, arch = attrs(t), arch_of(t)
        row = {c: a.get(c, "") for c in COLUMNS}
        row.update(number=t.number, state=t.state.name, backbone=arch.get("backbone", ""),
                   input_scale=arch.get("input_scale", ""), preset=preset_of(t) or "",
                   encoder_weights=encoder_weights_of(t).get("source", ""),
                   feasible=is_feasible(t) if t.constraints else "")  # blank: no accuracy floor to meet
        rows.append(row)
    return rows


def pareto_front(trials: Iterable[FrozenTrial]) -> list[tuple[float, float, int]]:
    """(latency, si-RMSE, trial) of the scored `trials` not beaten on both axes, sorted by latency (feasible
    or not: the figure draws every complete trial)."""
    front, best = [], float("inf")
    for lat, err, num in sorted((latency_of(t), si_rmse_of(t), t.number) for t in trials):
        if err < best:
            front.append((lat, err, num))
            best = err
    return front


def table_trials(scored: list[FrozenTrial], top: int) -> list[FrozenTrial]:
    """The `top` best trials and every seed preset, best first: where the search stands against the presets."""
    chosen = {t.number: t for t in scored[:top]}
    chosen.update({t.number: t for t in scored if preset_of(t)})
    return by_score(chosen.values())
