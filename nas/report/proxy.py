"""The report's "Proxy check" section: how the search's short training ranked the trials that `nas proxy-check`
re-trained longer. Drawn from the study attribute `proxy_check` (see `nas.commands.proxy_check.check`); absent, no section."""

from __future__ import annotations

from html import escape
from typing import Any

import optuna

SUMMARY_ATTR = "proxy_check"  # the study attribute holding the last proxy check's summary


def proxy_summary(study: optuna.Study) -> dict[str, Any] | None:
    """The study's proxy-check summary (`nas proxy-check`), or None when it was never checked."""
    return study.user_attrs.get(SUMMARY_ATTR)


def _cell(value: Any, spec: str = "") -> str:
    """A figure for a cell; a missing or undefined one (a τ of a constant ranking) shows as an en dash."""
    if value is None or value == "":
        return "–"
    try:
        return escape(format(value, spec))
    except (TypeError, ValueError):
        return escape(str(value))


def _figures_row(name: str, stats: dict[str, Any]) -> str:
    lo, hi = stats.get("kendall_tau_interval") or (None, None)
    interval = "–" if lo is None or hi is None else f"{lo:.2f} to {hi:.2f}"
    return (f"<tr><td class=\"text\">{name}</td><td>{_cell(stats.get('kendall_tau'), '.2f')}</td>"
            f"<td>{escape(interval)}</td><td>{_cell(stats.get('kendall_p'), '.3g')}</td>"
            f"<td>{_cell(stats.get('spearman_rho'), '.2f')}</td></tr>")


def proxy_section(check: dict[str, Any] | None) -> str:
    """The section's HTML, or "" when the study has no proxy check."""
    if not isinstance(check, dict) or not check.get("pairs"):
        return ""
    level = round(100 * check.get("bootstrap", {}).get("level", 0.9))
    best = check.get("search_best")
    verdict = ("stays the best after re-training" if check.get("best_stays_best") else
               f"is rank {_cell(check.get('search_best_retrained_rank'))} of {_cell(check.get('k'))} after re-training")
    rows_wanted = [("si_rmse", "si-RMSE"), ("final_score", "Final Score")]
    if remeasured := check.get("latency_remeasured"):  # a latency taken again: the ranking at one latency per graph
        rows_wanted.append(("final_score_one_latency", "Final Score at one latency per graph (trials "
                            f"{', '.join(map(str, remeasured))} timed again)"))
    figures = "".join(_figures_row(escape(name), check.get(key, {})) for key, name in rows_wanted)
    head = "".join(f"<th>{h}</th>" for h in (
        "trial", "rank in the study", "search rank", "re-trained rank", "search si-RMSE", "re-trained si-RMSE",
        "search Final Score", "re-trained Final Score", "re-trained latency ms"))
    rows = "\n".join(
        f"<tr class=\"pair\"><td>{_cell(p.get('trial'))}</td><td>{_cell(p.get('study_rank'))}</td>"
        f"<td>{_cell(p.get('search_rank'))}</td><td>{_cell(p.get('retrained_rank'))}</td>"
        f"<td>{_cell(p.get('search_si_rmse'), '.4f')}</td><td>{_cell(p.get('retrained_si_rmse'), '.4f')}</td>"
        f"<td>{_cell(p.get('search_final_score'), '.4g')}</td><td>{_cell(p.get('retrained_final_score'), '.4g')}</td>"
        f"<td>{_cell(p.get('retrained_latency_ms'), '.1f')}</td></tr>" for p in check["pairs"])
    return (f"<h2 id=\"proxy-check\">Proxy check</h2>\n<p>{_cell(check.get('k'))} of the "
            f"{_cell(check.get('complete_trials'))} complete trials re-trained at budget "
            f"{_cell(check.get('budget'))} (<code>nas proxy-check</code>; {escape(str(check.get('selection', '')))}). "
            f"Do the search's figures rank them as the longer training does? Kendall τ with its {level}% bootstrap "
            f"interval over the pairs and its p-value, and Spearman ρ. The search's best, trial {_cell(best)}, "
            f"{verdict}.</p>\n"
            "<table><tr><th>figure</th><th>Kendall τ</th><th>τ interval</th><th>p</th><th>Spearman ρ</th></tr>"
            f"{figures}</table>\n<p></p>\n<table><tr>{head}</tr>\n{rows}</table>")
