"""What a study spent: trials by state, seconds per stage, and why trials failed or were pruned."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from optuna.trial import FrozenTrial

from nas.trial.record import fail_reason_of, screened_before_training, screened_by_of, stage_seconds_of

STAGES = ("train", "export", "evaluate", "measure")
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?:e-?\d+)?(?![\w.])")  # a figure, not the 2 of "onnx2tf"


@dataclass(frozen=True)
class ReasonGroup:
    """Trials that failed or were pruned for one cause, whatever their figures (or backbone)."""

    state: str  # "FAIL", "PRUNED", or "PRUNED before training"
    cause: str  # the reason's kind: what screened it, or the first line's text before its first figure
    detail: str  # the first line with each figure shown as its spread over the group, "min–max"
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
    """A reason's wording: its first line with numbers blanked, so "pruned at step 4: score 0.31"
    and "pruned at step 8: score 0.12" read the same."""
    if not fail_reason or not fail_reason.strip():
        return NO_REASON
    return _NUMBER.sub("…", fail_reason.strip().splitlines()[0])


NO_REASON = "(no reason recorded)"
SCREENS = {"compute_cap": "compute cap", "latency_bound": "latency bound"}  # `screened_by` -> its reasons' prefix


def reason_cause(fail_reason: str | None, screened_by: str | None = None) -> tuple[str, str]:
    """(cause, first line from the cause on) of a reason. A screen's verdict is its cause (the compute cap's
    reason starts with the backbone, which is no part of the cause); otherwise the cause is the first line's text
    before its first figure, or the whole line when it has none."""
    if not fail_reason or not fail_reason.strip():
        return NO_REASON, NO_REASON
    line = fail_reason.strip().splitlines()[0]
    if screened_by is not None:
        label = SCREENS.get(screened_by, screened_by.replace("_", " "))
        at = line.find(f"{label}:")
        return label, line[at:] if at >= 0 else line
    first = _NUMBER.search(line)
    cause = line[:first.start()].rstrip(" :(,=<>") if first else line
    return cause or line, line


def _span(texts: list[str]) -> str:
    """One figure's spread over a group, as written in the reasons: "4", or "4–12"."""
    values = sorted(set(texts), key=float)
    return values[0] if len(values) == 1 else f"{values[0]}–{values[-1]}"


def spread(lines: list[str]) -> str:
    """The lines' shared wording with each figure as its spread ("pruned at step 50–100: score 0.45–0.91"); lines
    worded differently: the commonest wording, figures blanked, and how many other wordings there are."""
    wordings = Counter(_NUMBER.sub("…", line) for line in lines)
    if len(wordings) > 1:
        common, _ = wordings.most_common(1)[0]
        return f"{common} (and {len(wordings) - 1} other wording(s))"
    columns = list(zip(*(_NUMBER.findall(line) for line in lines)))
    pieces = _NUMBER.split(lines[0])
    return "".join(piece + (_span(list(columns[i])) if i < len(columns) else "") for i, piece in enumerate(pieces))


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
    groups: dict[tuple[str, str], list[tuple[int, str]]] = {}
    for t in trials:
        if t.state.name not in ("FAIL", "PRUNED"):
            continue
        state = "PRUNED before training" if screened_before_training(t) else t.state.name
        cause, line = reason_cause(fail_reason_of(t), screened_by_of(t))
        groups.setdefault((state, cause), []).append((t.number, line))
    reasons = sorted((ReasonGroup(state, cause, spread([line for _, line in members]), [n for n, _ in members])
                      for (state, cause), members in groups.items()),
                     key=lambda g: (-g.count, g.state, g.cause))
    return StudyCost(dict(states), totals, means, with_stages, wall, reasons)
