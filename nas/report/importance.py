"""Which parameters set the best trials apart, by Optuna's own evaluator, or why that cannot be said.

PED-ANOVA (`optuna.importance.PedAnovaImportanceEvaluator`) needs nothing beyond Optuna; fANOVA,
Optuna's default, would add scikit-learn to a project that has no other use for it. PED-ANOVA answers
the question a search owner asks: which parameters distinguish the top quarter of trials by Final Score.
"""

from __future__ import annotations

import warnings

import optuna
from optuna.importance import PedAnovaImportanceEvaluator, get_param_importances
from optuna.trial import FrozenTrial

from nas.trial.record import score_of

MIN_TRIALS = 10  # fewer, and the "top quarter" is one or two trials: importances would rank noise
TOP_QUANTILE = 0.25
METHOD = f"PED-ANOVA: what sets the top {TOP_QUANTILE:.0%} of complete trials by Final Score apart"


def top_count(complete: int) -> int:
    """How many trials PED-ANOVA's top quantile holds among `complete` trials."""
    return max(1, round(TOP_QUANTILE * complete))


def score_importances(study: optuna.Study, scored: list[FrozenTrial]) -> tuple[dict[str, float] | None, str]:
    """(importances, "") when the study can support them, else (None, a sentence saying why not).

    The target is the `final_score` user attribute (negated: PED-ANOVA ranks low values as best), so a
    Pareto study, which has no single value, gets importances too.
    """
    if len(scored) < MIN_TRIALS:
        return None, (f"Parameter importances are not shown: they need at least {MIN_TRIALS} complete trials to "
                      f"say more than noise, and this study has {len(scored)} (PED-ANOVA would compare its top "
                      f"{top_count(len(scored))} with the rest). Run more trials and report again.")
    if len({score_of(t) for t in scored}) < 2:
        return None, "Parameter importances need trials with different Final Scores; every complete trial scored the same."
    evaluator = PedAnovaImportanceEvaluator(target_quantile=TOP_QUANTILE)
    try:
        with warnings.catch_warnings():  # "few trials above the quantile": the page says how many trials there are
            warnings.simplefilter("ignore", UserWarning)
            importances = get_param_importances(study, evaluator=evaluator,
                                                target=lambda t: -score_of(t))
    except (ValueError, RuntimeError, KeyError) as exc:  # e.g. no parameter every complete trial shares
        return None, f"Optuna could not compute parameter importances: {exc}"
    if not importances:
        return None, "Parameter importances need a parameter that every complete trial shares; there is none."
    return importances, ""
