"""The seed presets a study starts from: which are points of the space, and enqueuing them once."""

from __future__ import annotations

import optuna

from nas.arch import Arch
from nas.infra.console import err as console
from nas.presets import preset_variants
from nas.space import SearchSpace
from nas.trial.record import arch_id_of, preset_of, preset_record


def preset_points(space: SearchSpace) -> dict[str, Arch]:
    """Every seed preset in every precision the space offers, named `preset` or `preset-int8`."""
    return preset_variants(space.precisions())


def enqueue_baselines(study: optuna.Study, space: SearchSpace, names: list[str] | None = None) -> int:
    """Enqueue seed presets that lie in the space and are not in the study yet; how many were enqueued.

    `names` None: every preset in every precision of the space, in `PRESETS` order, cheapest first
    (fewest MACs at 640×480), so that once the cheap ones are timed the latency screen can skip the
    presets that cannot beat them; a preset outside the space is then skipped with a line saying so.
    Named presets run in the order given; one outside the space is skipped silently.
    """
    trials = study.get_trials(deepcopy=False)
    seen_archs = {arch_id_of(t) for t in trials}
    seen_presets = {preset_of(t) for t in trials}
    points = preset_points(space)
    wanted = list(points) if names is None else [n for n in names if n in points]
    count = 0
    for name in wanted:
        arch = points[name]
        if arch.arch_id in seen_archs or name in seen_presets:
            continue
        if problems := space.violations(arch):
            if names is None:
                console.print(f"preset {name} is not a point of this space ({problems[0]}); skipped", markup=False)
            continue
        study.enqueue_trial(arch.to_params(), user_attrs=preset_record(name), skip_if_exists=True)
        count += 1
    return count
