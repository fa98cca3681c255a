"""Reading a study for the report: CSV rows, the trials that have a score, the Pareto front.

Figures come from user attributes, not `trial.value`: a Pareto study (two objectives) has no
single value, but every complete trial records its `final_score`, `si_rmse` and `latency_ms`.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import groupby
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from nas.trial.study import is_feasible

COLUMNS = ("number", "state", "final_score", "si_rmse", "rmse", "log10", "rel", "latency_ms", "latency_p90_ms",
           "device", "params", "macs", "tflite_bytes", "backbone", "input_scale", "precision", "encoder_weights",
           "arch_id", "preset", "feasible", "fail_reason")

SCORED_ATTRS = ("final_score", "si_rmse", "latency_ms")


def trial_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """One CSV row per trial, every state, in trial order."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        row = {c: a.get(c, "") for c in COLUMNS}
        row.update(number=t.number, state=t.state.name, backbone=a.get("arch", {}).get("backbone", ""),
                   input_scale=a.get("arch", {}).get("input_scale", ""),
                   preset=a.get("preset", ""), encoder_weights=a.get("encoder_weights", {}).get("source", ""),
                   feasible=is_feasible(t) if t.constraints else "")  # blank: no accuracy floor to meet
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


def scored_trials(trials: Iterable[FrozenTrial]) -> list[FrozenTrial]:
    """Complete trials with a Final Score, si-RMSE and latency, best score first."""
    scored = [t for t in trials if t.state == TrialState.COMPLETE and all(k in t.user_attrs for k in SCORED_ATTRS)]
    return sorted(scored, key=lambda t: (-t.user_attrs["final_score"], t.number))


def best_feasible(scored: list[FrozenTrial]) -> FrozenTrial | None:
    """The best of `scored` (best first) that meets the study's accuracy floor; None when none does."""
    return next((t for t in scored if is_feasible(t)), None)


def table_trials(scored: list[FrozenTrial], top: int) -> list[FrozenTrial]:
    """The `top` best trials and every seed preset, best first: where the search stands against the presets."""
    chosen = {t.number: t for t in scored[:top]}
    chosen.update({t.number: t for t in scored if t.user_attrs.get("preset")})
    return sorted(chosen.values(), key=lambda t: (-t.user_attrs["final_score"], t.number))


def _runs(values: Iterable[Any]) -> str:
    """`concat×4, none`: a per-stage tuple without repeating itself."""
    parts = []
    for value, run in groupby(values):
        n = len(list(run))
        parts.append(f"{value}×{n}" if n > 1 else str(value))
    return ", ".join(parts)


def arch_line(arch: dict[str, Any]) -> str:
    """An architecture in one line a person can compare with the next row's."""
    if not arch:
        return "?"
    parts = [str(arch.get("backbone", "?")), f"{arch.get('depth', '?')} stages",
             "decoder " + "-".join(str(c) for c in arch.get("decoder_channels", ())),
             "skips " + _runs(arch.get("skips", ())), "blocks " + _runs(arch.get("blocks", ()))]
    if arch.get("ffm"):
        parts.append("FFM")
    if arch.get("rfdb_esa"):
        parts.append("ESA")
    parts += [f"{arch.get('upsample', '?')} upsampling", f"scale {arch.get('input_scale', '?')}",
              f"{arch.get('head', '?')} head"]
    return " · ".join(parts)
