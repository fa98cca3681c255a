"""The report's figures, drawn with matplotlib (Agg: no display, files only).

Each function draws one PNG from scored trials (`trials.scored_trials`) and returns what the page
needs to caption it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import ScalarFormatter  # noqa: E402
from optuna.trial import FrozenTrial  # noqa: E402

from nas.hardware.agreement import ReferenceFigure  # noqa: E402
from nas.metrics import ScoreRule
from nas.trial.record import backbone_of, is_feasible, latency_of, precision_of, preset_of, score_of, si_rmse_of  # noqa: E402
from nas.report.trials import pareto_front  # noqa: E402
from nas.infra.files import atomic_save  # noqa: E402

PRECISION_MARKERS = {"fp32": "o", "int8": "s"}
OTHER_MARKER = "^"
DPI = 110


def score_levels(best: float, count: int = 4) -> list[float]:
    """Equal-score lines to draw: the best score and halvings of it, so the best trial lies on one."""
    return [best / 2 ** k for k in range(count)]


def _label(t: FrozenTrial) -> str:
    return preset_of(t) or f"#{t.number}"


@dataclass(frozen=True)
class ParetoDrawn:
    """What `pareto_figure` drew, so the caption names only that: the equal-score lines inside the axes and the
    legend's entries."""

    levels: list[float] = field(default_factory=list)  # the equal-score lines drawn, best first
    legend: list[str] = field(default_factory=list)
    front: bool = False  # the Pareto front's line (two points or more)
    floor: bool = False  # the accuracy floor's line (inside the si-RMSE range shown)


def _visible(rule: ScoreRule, level: float, xs: list[float], y_lo: float, y_hi: float) -> bool:
    """Whether the equal-score line of `level` passes through the plotted area."""
    ys = [rule.si_rmse_at(level, x) for x in xs]
    return any(y_lo <= y <= y_hi for y in ys) or (min(ys) < y_lo and max(ys) > y_hi)


def pareto_figure(scored: list[FrozenTrial], best: FrozenTrial | None, path: Path, title: str,
                  rule: ScoreRule = ScoreRule(), max_si_rmse: float | None = None) -> ParetoDrawn:
    """si-RMSE against latency (log x): backbones coloured, precisions as markers, seed presets named,
    the Pareto front (when it has two points or more), and dashed lines of equal Final Score through `best`
    (None: no trial meets the accuracy floor, no lines), those that cross the plotted area; with a floor, its
    line. The legend, outside the axes, lists what is drawn and nothing else."""
    fig, ax = plt.subplots(figsize=(10, 5.5))
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(ScalarFormatter())
    ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.set_xlabel("latency (ms, median on the device)")
    ax.set_ylabel("si-RMSE (TFLite, validation)")
    ax.set_title(title)
    if not scored:
        ax.text(0.5, 0.5, "no complete trial", transform=ax.transAxes, ha="center", va="center")
        _save(fig, path)
        return ParetoDrawn()
    backbones = sorted({backbone_of(t) for t in scored})
    colours = {b: plt.get_cmap("tab10")(i % 10) for i, b in enumerate(backbones)}
    for t in scored:
        preset = bool(preset_of(t))
        ax.scatter(latency_of(t), si_rmse_of(t), s=70 if preset else 36, zorder=3,
                   marker=PRECISION_MARKERS.get(precision_of(t), OTHER_MARKER), color=colours[backbone_of(t)],
                   edgecolors="black" if preset else "none", linewidths=1.2)
        ax.annotate(_label(t), (latency_of(t), si_rmse_of(t)), fontsize=8 if preset else 7,
                    fontweight="bold" if preset else "normal", xytext=(4, 3), textcoords="offset points")
    front = pareto_front(scored)
    if len(front) > 1:  # a one-point front is no line
        ax.plot([p[0] for p in front], [p[1] for p in front], "-", color="0.45", lw=1, zorder=2)

    latencies = [latency_of(t) for t in scored]
    errors = [si_rmse_of(t) for t in scored]
    x_lo, x_hi = min(latencies) / 1.6, max(latencies) * 1.6
    spread = max(max(errors) - min(errors), 0.02)
    y_lo, y_hi = min(errors) - 0.25 * spread, max(errors) + 0.25 * spread
    ax.set_xlim(x_lo, x_hi)
    ax.set_ylim(y_lo, y_hi)
    floor_drawn = max_si_rmse is not None and y_lo <= max_si_rmse <= y_hi
    if floor_drawn:
        ax.axhline(max_si_rmse, color="tab:red", ls=":", lw=1.2, zorder=1)
        ax.annotate(f"max si-RMSE {max_si_rmse:g}: above is infeasible", (x_lo, max_si_rmse), fontsize=7,
                    color="tab:red", xytext=(3, 3), textcoords="offset points")
    levels: list[float] = []
    if best is not None:  # nothing meets the floor: no best to draw lines through
        xs = [x_lo * (x_hi / x_lo) ** (i / 50) for i in range(51)]
        levels = [level for level in score_levels(score_of(best)) if _visible(rule, level, xs, y_lo, y_hi)]
        for level in levels:
            ax.plot(xs, [rule.si_rmse_at(level, x) for x in xs], "--", color="0.6", lw=0.8, zorder=1)
            x_top = rule.latency_at(level, y_hi)  # where the line leaves the plot at the top
            if x_lo <= x_top <= x_hi:
                ax.annotate(f"score {level:.3g}", (x_top, y_hi), fontsize=7, color="0.4", ha="left", va="top",
                            xytext=(2, -2), textcoords="offset points")
            elif y_lo <= (y := rule.si_rmse_at(level, x_hi)) <= y_hi:
                ax.annotate(f"score {level:.3g}", (x_hi, y), fontsize=7, color="0.4", ha="right", va="bottom")
        ax.set_xlim(x_lo, x_hi)
        ax.set_ylim(y_lo, y_hi)
        ax.annotate(f"best: {_label(best)} (trial {best.number}, score {score_of(best):.3g})",
                    (latency_of(best), si_rmse_of(best)), xytext=(12, -18), textcoords="offset points", fontsize=8,
                    color="darkred", arrowprops={"arrowstyle": "->", "color": "darkred"})
    precisions = {precision_of(t) for t in scored}
    handles = [Line2D([], [], ls="", marker="o", color=colours[b], label=b) for b in backbones]
    handles += [Line2D([], [], ls="", marker=m, color="0.3", label=p) for p, m in PRECISION_MARKERS.items()
                if p in precisions]
    handles += [Line2D([], [], ls="", marker=OTHER_MARKER, color="0.3", label=p)
                for p in sorted(precisions - set(PRECISION_MARKERS))]
    if any(preset_of(t) for t in scored):
        handles.append(Line2D([], [], ls="", marker="o", color="white", markeredgecolor="black", label="seed preset"))
    if len(front) > 1:
        handles.append(Line2D([], [], ls="-", color="0.45", label="Pareto front"))
    if levels:
        handles.append(Line2D([], [], ls="--", color="0.6", label="equal Final Score"))
    if floor_drawn:
        handles.append(Line2D([], [], ls=":", color="tab:red", label="accuracy floor"))
    legend = ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    _save(fig, path)
    return ParetoDrawn(levels, [text.get_text() for text in legend.get_texts()], len(front) > 1, floor_drawn)


def history_figure(scored: list[FrozenTrial], started: datetime, path: Path) -> None:
    """Best Final Score so far against trial number and against wall-clock time since the study began."""
    by_number = sorted(scored, key=lambda t: t.number)
    by_time = sorted(scored, key=lambda t: t.datetime_complete or started)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, trials, x_of, label in (
            (left, by_number, lambda t: t.number, "trial number"),
            (right, by_time, lambda t: ((t.datetime_complete or started) - started).total_seconds() / 60,
             "minutes since the study began")):
        xs = [x_of(t) for t in trials]
        scores = [score_of(t) for t in trials]
        feasible = [is_feasible(t) for t in trials]
        running, best = [], float("nan")
        for score, ok in zip(scores, feasible):  # the best so far that meets the accuracy floor
            if ok and (math.isnan(best) or score > best):
                best = score
            running.append(best)
        ax.scatter([x for x, ok in zip(xs, feasible) if ok], [y for y, ok in zip(scores, feasible) if ok], s=18,
                   color="tab:blue", alpha=0.6, label="trial")
        if not all(feasible):
            ax.scatter([x for x, ok in zip(xs, feasible) if not ok], [y for y, ok in zip(scores, feasible) if not ok],
                       s=18, facecolors="none", edgecolors="0.5", label="above the accuracy floor")
        ax.step(xs, running, where="post", color="tab:red", label="best so far")
        ax.set_xlabel(label)
        ax.ticklabel_format(axis="x", useOffset=False)
        ax.grid(alpha=0.3)
    left.set_ylabel("Final Score")
    left.legend(fontsize=8)
    fig.suptitle("optimisation history (complete trials)")
    _save(fig, path)


def importance_figure(importances: dict[str, float], path: Path) -> None:
    """Horizontal bars, most important parameter on top."""
    names = list(importances)[::-1]
    fig, ax = plt.subplots(figsize=(5.5, 0.26 * len(names) + 1.0))
    ax.barh(names, [importances[n] for n in names], color="tab:green")
    ax.set_xlabel("importance for the Final Score (PED-ANOVA, sums to 1)", fontsize=8)
    ax.tick_params(labelsize=8)
    _save(fig, path)


def sustained_figure(run: dict, path: Path, title: str = "latency and temperature under sustained load") -> bool:
    """The runner's `sustained` object drawn over time: the median latency of each sample (the invokes since the
    sample before) and, on a second axis, the temperature; the first and last stretch's medians marked over their
    stretches. False (and nothing written) when the run has no sample with a latency."""
    samples = [s for s in run.get("samples") or [] if len(s) > 3]
    timed = [(s[0], s[3]) for s in samples if s[3] is not None]
    if not timed:
        return False
    fig, ax = plt.subplots(figsize=(8, 3.8))
    ax.plot([t for t, _ in timed], [ms for _, ms in timed], color="tab:blue", marker="o", ms=3, lw=1.2,
            label="median latency per sample")
    seconds, stretch = float(run.get("seconds") or timed[-1][0]), float(run.get("stretch_s") or 0)
    for name, start, ms in (("first", 0.0, run.get("first_median_ms")),
                            ("last", seconds - stretch, run.get("last_median_ms"))):
        if ms is None:
            continue
        ax.hlines(ms, start, start + max(stretch, seconds * 0.02), colors="tab:red", lw=2.5)
        ax.annotate(f"{name} {stretch:g} s: {ms:.2f} ms", (start if name == "first" else seconds, ms),
                    textcoords="offset points", xytext=(0, 6), ha="left" if name == "first" else "right",
                    fontsize=8, color="tab:red")
    ax.set_xlabel("seconds of sustained load")
    ax.set_ylabel("latency (ms)", color="tab:blue")
    ax.set_xlim(0, max(seconds, timed[-1][0]))
    ax.margins(y=0.2)  # room for the stretch labels
    ax.grid(alpha=0.3)
    temps = [(s[0], s[1]) for s in samples if s[1] is not None]
    if temps:
        heat = ax.twinx()
        heat.plot([t for t, _ in temps], [c for _, c in temps], color="tab:orange", lw=1.2, label="temperature")
        heat.set_ylabel("temperature (°C)", color="tab:orange")
        low, high = min(c for _, c in temps), max(c for _, c in temps)
        heat.set_ylim(low - max(2.0, (high - low) * 0.2), high + max(2.0, (high - low) * 0.2))
    else:
        ax.text(0.99, 0.02, "temperature unreadable on this device", transform=ax.transAxes, ha="right",
                va="bottom", fontsize=8, color="0.4")
    ax.set_title(title, fontsize=10)
    _save(fig, path)
    return True


def _save(fig: plt.Figure, path: Path, tight: bool = True) -> None:
    """Write the PNG and free the figure; `tight=False` for figures laid out by matplotlib's constrained layout."""
    if tight:
        fig.tight_layout()
    atomic_save(path, lambda f: fig.savefig(f, dpi=DPI, format="png"))
    plt.close(fig)


def reference_figure(figures: list[ReferenceFigure], path: Path) -> None:
    """Each device's reference figures over time, one line per device; figures judged out are red crosses."""
    fig, ax = plt.subplots(figsize=(10, 4))
    names = sorted({f.name for f in figures})
    for i, name in enumerate(names):
        mine = [f for f in figures if f.name == name]
        times = [datetime.fromisoformat(f.time) for f in mine]
        ax.plot(times, [f.median_ms for f in mine], marker="o", markersize=4, color=plt.get_cmap("tab10")(i % 10),
                label=name)
        out = [(t, f.median_ms) for t, f in zip(times, mine) if f.verdict != "ok"]
        if out:
            ax.scatter([t for t, _ in out], [ms for _, ms in out], marker="x", s=60, color="tab:red", zorder=4)
    if any(f.verdict != "ok" for f in figures):
        ax.scatter([], [], marker="x", color="tab:red", label="taken out of the pool")
    ax.set_xlabel("time (UTC)")
    ax.set_ylabel("reference model, median ms")
    ax.set_title("reference figures per device")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.autofmt_xdate()
    _save(fig, path)
