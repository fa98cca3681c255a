"""`nas proxy-check`: does the search's short training rank architectures as a longer training would?

Every trial of a search is trained briefly (its budget); the search is only as good as that proxy's
ranking. This re-trains K complete trials at a longer budget through `nas finalize`'s re-training
step (same export, 640×480 scoring and device timing) and measures how the two rankings agree:
Kendall τ (with a bootstrap interval and its p-value) and Spearman ρ of si-RMSE and of the Final
Score, and whether the search's best is still the best. Where a re-trained model's latency was timed
again rather than served from the search's figure (that figure was taken on a busy device), the
Final Score is also compared at one latency per graph, so a measurement fault is not read as the
proxy's.

Which trials: the complete trials ranked by Final Score (ties by trial number); the top ceil(K/2),
then the other K − ceil(K/2) evenly spaced through the rest of the ranking from its first to its
last (a single one: its middle), so the check covers good and bad candidates and is reproducible.

Each finished re-training is stored in the study (`proxy_check:trial:N`) before the next starts, with
the recipe it used (budget, distillation, seed); a re-run re-trains only the trials whose stored
recipe differs. The summary goes to the study attribute `proxy_check` and a JSON file.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar


import numpy as np
import optuna
from optuna.trial import FrozenTrial
from scipy.stats import kendalltau

from nas.config import Budget, RunConfig
from nas.infra.console import err as console
from nas.errors import ConfigError
from nas.infra.files import atomic_write_text
from nas.report.proxy import SUMMARY_ATTR
from nas.trial.latency_model import spearman
from nas.models.pretrained import WeightSource
from nas.trial.pipeline import retrain, trial_weights_setting
from nas.trial.session import Session, check_inputs, encoder_weights
from nas.trial.record import attrs, backbone_of, has_arch, latency_of, score_of, si_rmse_of
from nas.trial.record import ranked_trials as ranked_by_score
from nas.trial.study import load_study

MIN_TRIALS = 3  # fewer pairs than this have no ranking worth a τ
RESAMPLES = 2000
LEVEL = 0.90
SELECTION_RULE = ("complete trials ranked by Final Score (ties: lower trial number first); the top ceil(K/2), "
                  "then the other trials evenly spaced through the rest of the ranking, its first to its last "
                  "(a single one: its middle)")

T = TypeVar("T")
Retrain = Callable[[FrozenTrial], dict[str, Any]]  # a trial -> its re-trained figures (si_rmse, final_score, ...)


def trial_attr(number: int) -> str:
    """The study attribute holding trial `number`'s re-trained figures."""
    return f"{SUMMARY_ATTR}:trial:{number}"


# --- selection --------------------------------------------------------------------------------------------

def ranked_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Complete trials with an architecture and figures, best Final Score first (a Pareto study's too), whether or
    not they meet the study's accuracy floor: the ranking SELECTION_RULE draws from."""
    return [t for t in ranked_by_score(study, feasible_only=False) if has_arch(t) and si_rmse_of(t) is not None]


def check_k(k: int) -> None:
    if k < MIN_TRIALS:
        raise ConfigError(None, f"--trials {k}: a proxy check needs at least {MIN_TRIALS} trials to rank")


def check_request(study_name: str, complete: int, k: int) -> None:
    """K and the study's complete trials, checked before any work (ConfigError says what to change)."""
    check_k(k)
    if complete < MIN_TRIALS:
        raise ConfigError(None, f"study {study_name!r} has {complete} complete trial(s); a proxy check needs at "
                                f"least {MIN_TRIALS}: run the search further first")
    if k > complete:
        raise ConfigError(None, f"--trials {k} is more than the {complete} complete trials of study "
                                f"{study_name!r}; use --trials {complete} or fewer")


def select(ranked: Sequence[T], k: int) -> list[T]:
    """`k` of `ranked` (best first) by SELECTION_RULE, in ranking order."""
    top = math.ceil(k / 2)
    rest, spread = ranked[top:], k - top
    if spread == 0:
        positions: list[int] = []
    elif spread == 1:
        positions = [(len(rest) - 1) // 2]
    else:  # floor(x + 0.5), not numpy's round-half-even, which can round two neighbours onto one position
        positions = [int(math.floor(i * (len(rest) - 1) / (spread - 1) + 0.5)) for i in range(spread)]
    return list(ranked[:top]) + [rest[p] for p in positions]


# --- statistics -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Pair:
    """One trial's figures in the search and after re-training."""

    trial: int
    search_si_rmse: float
    retrained_si_rmse: float
    search_score: float
    retrained_score: float
    search_latency_ms: float | None = None
    retrained_latency_ms: float | None = None

    @property
    def latency_remeasured(self) -> bool:
        """The re-trained model's latency is not the search's figure (which the graph cache serves unless it was
        taken on a busy device, `latency_contended`, or latency is keyed by file)."""
        known = self.search_latency_ms is not None and self.retrained_latency_ms is not None
        return known and self.search_latency_ms != self.retrained_latency_ms

    @property
    def search_score_at_retrained_latency(self) -> float:
        """The search's Final Score had its si-RMSE been timed at the re-trained latency (score ∝ 1 / latency):
        compared with the re-trained score, it isolates what the longer training changed."""
        if not self.latency_remeasured:
            return self.search_score
        return self.search_score * self.search_latency_ms / self.retrained_latency_ms


def _finite(value: float) -> float | None:
    """JSON-safe: an undefined statistic (NaN) is None, which the dashboard and the report can show."""
    return None if value is None or not math.isfinite(value) else float(value)


def bootstrap_tau(x: np.ndarray, y: np.ndarray, seed: int, resamples: int = RESAMPLES,
                  level: float = LEVEL) -> tuple[float | None, float | None, int]:
    """Percentile interval of Kendall τ over pairs resampled with replacement; also how many resamples had a τ.

    Resamples in which one side is constant have no τ and are left out (at K = 3 one in nine draws a
    single pair thrice); `scipy.stats.bootstrap` would return NaN for the whole interval instead.
    """
    rng = np.random.default_rng(seed)
    taus = []
    for idx in rng.integers(0, len(x), size=(resamples, len(x))):
        tau = kendalltau(x[idx], y[idx]).statistic
        if math.isfinite(tau):
            taus.append(tau)
    if not taus:
        return None, None, 0
    lo, hi = np.percentile(taus, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return float(lo), float(hi), len(taus)


def rank_agreement(search: Sequence[float], retrained: Sequence[float], seed: int, resamples: int = RESAMPLES,
                   level: float = LEVEL) -> dict[str, Any]:
    """Kendall τ (tau-b, its p-value and bootstrap interval) and Spearman ρ of one figure, search vs re-trained."""
    x, y = np.asarray(search, dtype=float), np.asarray(retrained, dtype=float)
    result = kendalltau(x, y)
    lo, hi, used = bootstrap_tau(x, y, seed, resamples, level)
    return {"kendall_tau": _finite(result.statistic), "kendall_p": _finite(result.pvalue),
            "kendall_tau_interval": [lo, hi], "bootstrap_resamples_used": used,
            "spearman_rho": _finite(spearman(x, y))}


def agreement(pairs: Sequence[Pair], seed: int = 0, resamples: int = RESAMPLES, level: float = LEVEL
              ) -> dict[str, Any]:
    """How the re-trained figures rank the pairs against the search's: τ, ρ, and where the search's best lands.

    Ranks are by Final Score (higher is better), ties by trial number; rank 1 is the best.
    """
    if len(pairs) < 2:
        raise ValueError("rank agreement needs at least two pairs")

    def order(score: Callable[[Pair], float]) -> list[int]:
        return [p.trial for p in sorted(pairs, key=lambda p: (-score(p), p.trial))]

    search_order, retrained_order = order(lambda p: p.search_score), order(lambda p: p.retrained_score)
    best = search_order[0]
    return {
        "si_rmse": rank_agreement([p.search_si_rmse for p in pairs], [p.retrained_si_rmse for p in pairs], seed,
                                  resamples, level),
        "final_score": rank_agreement([p.search_score for p in pairs], [p.retrained_score for p in pairs], seed,
                                      resamples, level),
        # The same at one latency per graph: differs from final_score only where a latency was measured again.
        "final_score_one_latency": rank_agreement([p.search_score_at_retrained_latency for p in pairs],
                                                  [p.retrained_score for p in pairs], seed, resamples, level),
        "latency_remeasured": [p.trial for p in pairs if p.latency_remeasured],
        "search_best": best, "search_best_retrained_rank": retrained_order.index(best) + 1,
        "best_stays_best": retrained_order[0] == best,
        "search_ranks": {p: i + 1 for i, p in enumerate(search_order)},
        "retrained_ranks": {p: i + 1 for i, p in enumerate(retrained_order)},
        "bootstrap": {"resamples": resamples, "level": level, "seed": seed},
    }


# --- re-training, resumable -------------------------------------------------------------------------------

def recipe(budget: Budget, config: RunConfig) -> dict[str, Any]:
    """What a re-training's figures depend on besides the trial: a stored one with another recipe is redone."""
    return {"budget": budget.model_dump(), "distill": config.distill, "seed": config.seed}


def stored(study: optuna.Study, number: int, wanted: dict[str, Any]) -> dict[str, Any] | None:
    """Trial `number`'s re-trained figures stored by an earlier run with the same recipe, or None."""
    entry = study.user_attrs.get(trial_attr(number))
    return entry if isinstance(entry, dict) and entry.get("recipe") == wanted else None


def retrain_all(study: optuna.Study, chosen: Sequence[FrozenTrial], wanted: dict[str, Any], retrain: Retrain
                ) -> tuple[list[dict[str, Any]], int]:
    """Each chosen trial's re-trained figures, re-training only those not stored with this recipe; each is stored
    as soon as it is done, so an interrupted run loses at most the re-training under way. Returns the figures
    (in `chosen` order) and how many were re-trained now."""
    entries, done_now = [], 0
    for i, trial in enumerate(chosen, 1):
        entry = stored(study, trial.number, wanted)
        if entry is None:
            console.print(f"proxy check: re-training trial {trial.number} ({i} of {len(chosen)})", markup=False,
                          soft_wrap=True)
            entry = {"trial": trial.number, "recipe": wanted, **retrain(trial),
                     "created": datetime.now(timezone.utc).isoformat()}
            study.set_user_attr(trial_attr(trial.number), entry)
            done_now += 1
        entries.append(entry)
    return entries, done_now


def pairs_of(chosen: Sequence[FrozenTrial], entries: Sequence[dict[str, Any]]) -> list[Pair]:
    return [Pair(t.number, si_rmse_of(t), e["si_rmse"], score_of(t), e["final_score"], latency_of(t),
                 e.get("latency_ms")) for t, e in zip(chosen, entries)]


def summarize(study: optuna.Study, ranked: Sequence[FrozenTrial], chosen: Sequence[FrozenTrial],
              entries: Sequence[dict[str, Any]], wanted: dict[str, Any]) -> dict[str, Any]:
    """The check's figures and its per-trial pairs, JSON-safe (the study attribute and the file hold this)."""
    stats = agreement(pairs_of(chosen, entries), seed=wanted["seed"])
    study_rank = {t.number: i + 1 for i, t in enumerate(ranked)}
    rows = []
    for t, e in zip(chosen, entries):
        a = attrs(t)
        rows.append({"trial": t.number, "preset": a.get("preset"), "arch_id": a.get("arch_id"),
                     "study_rank": study_rank[t.number], "search_rank": stats["search_ranks"][t.number],
                     "retrained_rank": stats["retrained_ranks"][t.number],
                     "search_si_rmse": a["si_rmse"], "retrained_si_rmse": e["si_rmse"],
                     "search_final_score": a["final_score"], "retrained_final_score": e["final_score"],
                     "search_latency_ms": a.get("latency_ms"), "retrained_latency_ms": e.get("latency_ms"),
                     "retrained_train_seconds": e.get("train_seconds")})
    figures = {k: v for k, v in stats.items() if k not in ("search_ranks", "retrained_ranks")}
    return {"study": study.study_name, "budget": wanted["budget"]["name"], "recipe": wanted, "k": len(chosen),
            "complete_trials": len(ranked), "selection": SELECTION_RULE, **figures, "pairs": rows,
            "created": datetime.now(timezone.utc).isoformat()}


def check_and_store(study: optuna.Study, ranked: Sequence[FrozenTrial], chosen: Sequence[FrozenTrial],
                    wanted: dict[str, Any], retrain: Retrain, out: Path) -> dict[str, Any]:
    """Re-train what is missing, measure the agreement, store it in the study and in `out` (JSON)."""
    entries, done_now = retrain_all(study, chosen, wanted, retrain)
    summary = {**summarize(study, ranked, chosen, entries, wanted), "retrained_this_run": done_now}
    study.set_user_attr(SUMMARY_ATTR, summary)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(summary, indent=2))
    return summary


class Retrainer:
    """Re-trains a trial through the pipeline's `retrain` step (as `nas finalize` does). The session opens data,
    meter and teacher at the first re-training, so a re-run with nothing left to re-train loads none of them."""

    def __init__(self, session: Session, budget: Budget, workdir: Path):
        self.session, self.budget, self.workdir = session, budget, workdir

    def __call__(self, trial: FrozenTrial) -> dict[str, Any]:
        config, ctx = self.session.config, self.session.context
        out = self.workdir / f"trial-{trial.number}"
        out.mkdir(parents=True, exist_ok=True)
        done = retrain(ctx, trial, self.budget, out, f"trial {trial.number} re-run",
                       config.seed + trial.number)  # the search trained trial N with seed + N
        record = {k: v for k, v in done.record.as_attrs().items() if k != "arch"}  # the trial holds the arch
        console.print(f"trial {trial.number} re-trained: si-RMSE {done.record.si_rmse:.4f} (search "
                      f"{si_rmse_of(trial):.4f}), score {done.record.final_score:.3f} (search "
                      f"{score_of(trial):.3f})", markup=False, soft_wrap=True)
        return {**record, "train_steps": done.train.steps, "train_seconds": done.train.seconds,
                "distill_lambda": done.distill_lambda, "val_images": len(ctx.val_frames), "files": str(out)}


def trial_weights(config: RunConfig, chosen: Sequence[FrozenTrial]) -> dict[str, WeightSource]:
    """Each chosen trial's encoder starts where its search trial started (as in `nas finalize`), resolved and
    checked before any work."""
    groups: dict[str, tuple[Any, set[str]]] = {}
    for t in chosen:
        setting = trial_weights_setting(config, t)
        groups.setdefault(str(setting), (setting, set()))[1].add(backbone_of(t))
    weights: dict[str, WeightSource] = {}
    for setting, backbones in groups.values():
        weights.update(encoder_weights(config.model_copy(update={"pretrained": setting}), sorted(backbones)))
    return weights


def default_out(config: RunConfig) -> Path:
    return config.results / "proxy_check" / f"{config.study}.json"


def proxy_check(config: RunConfig, k: int, budget: Budget, out: Path | None = None) -> dict[str, Any]:
    """Check K trials of `config.study` at `budget`; returns the summary (also in the study and `out`)."""
    check_k(k)
    study = load_study(config.storage_url, config.study)
    ranked = ranked_trials(study)
    check_request(config.study, len(ranked), k)
    chosen = select(ranked, k)
    check_inputs(config)  # a bad space, device or data set is named before the weights are resolved
    out = out or default_out(config)
    with Session(config, weights=trial_weights(config, chosen), budget=budget) as session:
        console.print(f"proxy check of study {config.study!r}: trials {', '.join(str(t.number) for t in chosen)} "
                      f"of {len(ranked)} complete, re-trained at budget {budget.name} ({budget.steps} steps × "
                      f"{budget.batch_size})", markup=False, soft_wrap=True)
        retrainer = Retrainer(session, budget, out.parent / config.study)
        return check_and_store(study, ranked, chosen, recipe(budget, config), retrainer, out)


def _interval(stats: dict[str, Any]) -> str:
    lo, hi = stats["kendall_tau_interval"]
    return "–" if lo is None else f"{lo:.2f} to {hi:.2f}"


def _num(value: float | None, spec: str = ".2f") -> str:
    return "undefined" if value is None else format(value, spec)


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """What `nas proxy-check` prints: the agreement in a few lines a person can act on."""
    level = round(100 * summary["bootstrap"]["level"])
    lines = [f"proxy check of study {summary['study']}: {summary['k']} trials re-trained at budget "
             f"{summary['budget']} ({summary['retrained_this_run']} in this run)"]
    for key, name in (("si_rmse", "si-RMSE"), ("final_score", "Final Score")):
        s = summary[key]
        lines.append(f"{name}: Kendall tau {_num(s['kendall_tau'])} ({level}% interval {_interval(s)}, "
                     f"p {_num(s['kendall_p'], '.3g')}), Spearman rho {_num(s['spearman_rho'])}")
    if remeasured := summary.get("latency_remeasured"):
        s = summary["final_score_one_latency"]
        lines.append(f"Final Score at one latency per graph (trials {', '.join(map(str, remeasured))} timed again, "
                     f"not served from the search's figure): Kendall tau {_num(s['kendall_tau'])} ({level}% interval "
                     f"{_interval(s)}), Spearman rho {_num(s['spearman_rho'])}")
    verdict = "stays the best" if summary["best_stays_best"] else \
        f"is re-trained rank {summary['search_best_retrained_rank']} of {summary['k']}"
    lines.append(f"the search's best, trial {summary['search_best']}, {verdict}")
    return lines
