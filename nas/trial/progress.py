"""Where a running study stands, as one line at the start of each trial.

`trial T: trained M of N, S screened before training, best X.XXX (trial j), elapsed HH:MM, about HH:MM
left`: T is the Optuna trial number every later line of that trial starts with, M counts trained trials
(what `--trials` counts, see `nas.trial.record.trained_count`), S the candidates the compute cap or the
latency screen stopped before training (they do not count); the estimate is this run's mean wall time
per trained trial times the trials left. A plain line, so a log file reads as well as a terminal.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import optuna
from optuna.trial import FrozenTrial

from nas.trial.record import best_feasible, is_trained, score_of, screened_before_training, trained_count


def hh_mm(seconds: float) -> str:
    """Seconds as HH:MM (hours beyond 99 simply grow), rounded to the minute."""
    minutes = round(max(seconds, 0.0) / 60)
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def study_line(number: int, trained: int, target: int, screened: int, best: tuple[float, int] | None,
               elapsed_s: float, mean_trial_s: float | None) -> str:
    """The line for trial `number`, about to start; no estimate of time left until a trial of this run has
    finished (`mean_trial_s` None)."""
    parts = [f"trial {number}: trained {trained} of {target}"]
    if screened:
        parts.append(f"{screened} screened before training")
    parts += [
             "no score yet" if best is None else f"best {best[0]:.3f} (trial {best[1]})",
             f"elapsed {hh_mm(elapsed_s)}"]
    if mean_trial_s is not None:
        parts.append(f"about {hh_mm(mean_trial_s * max(target - trained, 0))} left")
    return ", ".join(parts)


def best_score(study: optuna.Study) -> tuple[float, int] | None:
    """The best Final Score and its trial, from the trial records (so a Pareto study has one too), among
    trials that meet the study's accuracy floor (`nas.trial.record.best_feasible`)."""
    best = best_feasible(study)
    return None if best is None else (score_of(best), best.number)


class StudyProgress:
    """An Optuna callback that times this run's trained trials; `line(study)` says where the study stands."""

    def __init__(self, target: int, clock: Callable[[], float] = time.monotonic):
        self.target = target
        self.clock = clock
        self.started = clock()
        self.trial_seconds: list[float] = []

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if is_trained(trial) and trial.datetime_start is not None and trial.datetime_complete is not None:
            self.trial_seconds.append((trial.datetime_complete - trial.datetime_start).total_seconds())

    def line(self, study: optuna.Study, number: int) -> str:
        """Where the study stands as trial `number` starts."""
        mean = sum(self.trial_seconds) / len(self.trial_seconds) if self.trial_seconds else None
        screened = sum(1 for t in study.get_trials(deepcopy=False) if screened_before_training(t))
        return study_line(number, trained_count(study), self.target, screened, best_score(study),
                          self.clock() - self.started, mean)
