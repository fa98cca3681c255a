"""Seeded random draws of a search space, for tests that need real sampled architectures."""

from __future__ import annotations

from collections.abc import Iterator

import optuna

from nas.arch import Arch, ArchError
from nas.space import SearchSpace


def draws(space: SearchSpace, seed: int) -> Iterator[tuple[optuna.Study, optuna.Trial, Arch]]:
    """Endless draws that build: (study, trial, arch); a draw whose arch cannot be built is told PRUNED and
    skipped. The caller tells each trial it gets."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    while True:
        trial = study.ask()
        try:
            arch, _ = space.sample(trial)
        except ArchError:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            continue
        yield study, trial, arch
