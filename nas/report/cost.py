"""What a study spent: trials by state, seconds per stage, and why trials failed or were pruned."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from optuna.trial import FrozenTrial

from nas.trial.record import fail_reason_of, screened_before_training, stage_seconds_of

STAGES = ("train", "export", "evaluate", "measure")
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?:e-?\d+)?(?![\w.])")  # a figure, not the 2 of "onnx2tf"


@dataclass(frozen=True)
class ReasonGroup:
    """Trials that failed or were pruned for the same reason (figures aside)."""

    state: str  # "FAIL", "PRUNED", or "PRUNED before training"
    reason: str  # the first line of `fail_reason`, numbers replaced by "…"
    trials: list[int]

    @property
    def count(self) -> int:
        return len(self.trials)


@dataclass(frozen=True)
class StudyCost:
    states: dict[str, int]
    stage_totals_s: dict[str, float]
    stage_means_s: dict[str, float]
    trials_with_stages: int
    trial_seconds: float  # wall-clock of finished trials, start to end
    reasons: list[ReasonGroup] = field(default_factory=list)


def reason_key(fail_reason: str | None) -> str:
    """Group key of a reason: its first line with numbers blanked, so "pruned at step 4: score 0.31"
    and "pruned at step 8: score 0.12" count as one reason."""
    if not fail_reason or not fail_reason.strip():
        return "(no reason recorded)"
    return _NUMBER.sub("…", fail_reason.strip().splitlines()[0])


def study_cost(trials: list[FrozenTrial]) -> StudyCost:
    states = Counter(t.state.name for t in trials)
    totals = dict.fromkeys(STAGES, 0.0)
    with_stages = 0
    for t in trials:
        seconds = stage_seconds_of(t)
        if seconds:
            with_stages += 1
        for stage, value in seconds.items():
            totals[stage] = totals.get(stage, 0.0) + float(value)
    means = {stage: total / with_stages for stage, total in totals.items()} if with_stages else {}
    wall = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in trials
               if t.datetime_start is not None and t.datetime_complete is not None)
    groups: dict[tuple[str, str], list[int]] = {}
    for t in trials:
        if t.state.name not in ("FAIL", "PRUNED"):
            continue
        state = "PRUNED before training" if screened_before_training(t) else t.state.name
        groups.setdefault((state, reason_key(fail_reason_of(t))), []).append(t.number)
    reasons = sorted((ReasonGroup(state, reason, numbers) for (state, reason), numbers in groups.items()),
                     key=lambda g: (-g.count, g.state, g.reason))
    return StudyCost(dict(states), totals, means, with_stages, wall, reasons)
