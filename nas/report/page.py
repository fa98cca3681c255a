"""The report as one HTML file: inline CSS, images by relative path, no script, no server.

Everything shown comes from `ReportContent`; every string from the study is escaped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from html import escape
from string import Template
from typing import Any

from optuna.trial import FrozenTrial

from nas.data.preview import CAPTION as PREVIEW_CAPTION
from nas.trial.display import when
from nas.trial.record import attrs, is_feasible, precision_of, preset_of, score_of
from nas.report.figures import ParetoDrawn
from nas.report.cost import STAGES, StudyCost
from nas.report.devices import DeviceRow
from nas.report.importance import METHOD, top_count
from nas.report.proxy import proxy_section
from nas.report.trials import arch_line


@dataclass
class ReportContent:
    """What the page shows; file names are relative to the report folder."""

    study_name: str
    objectives: str  # e.g. "final_score (maximize)"
    storage: str
    generated: datetime
    trial_count: int
    best: FrozenTrial | None
    table: list[FrozenTrial]
    cost: StudyCost
    previews: dict[int, str] = field(default_factory=dict)  # trial number -> preview file
    preview_trials: list[FrozenTrial] = field(default_factory=list)
    pareto_png: str | None = None
    pareto: ParetoDrawn = field(default_factory=ParetoDrawn)  # what the figure drew: its caption says no more
    history_png: str | None = None
    importances: dict[str, float] | None = None
    importance_png: str | None = None
    importance_reason: str = ""
    importance_trials: int = 0  # the complete trials the importances rest on
    proxy_check: dict[str, Any] | None = None  # the study attribute `proxy_check`, when `nas proxy-check` ran
    max_si_rmse: float | None = None  # the study's accuracy floor; `best` meets it
    quality: str = ""  # what the study's budget means (`nas.trial.study_note.quality_note`), with `code` spans
    devices: list[DeviceRow] = field(default_factory=list)  # complete trials by device
    reference_png: str | None = None  # each device's reference figures over time
    reference_count: int = 0  # reference figures in the study database
    reference_out: int = 0  # of them, judged out
    flagged_windows: int = 0


PAGE = Template("""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>$title</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 1.6em; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.5em; text-align: right; vertical-align: top; }
th { background: #f3f3f3; } td.text { text-align: left; }
tr.preset { background: #f6f9ff; } tr.infeasible { color: #999; }
img.figure { max-width: 100%; } img.small { max-width: 620px; } figure { margin: 1em 0; } figcaption { font-size: 0.9em; color: #555; }
.warning { background: #fff3e0; border-left: 4px solid #e65100; padding: 0.6em 1em; }
.meta { color: #555; } .note { background: #eef4fb; border-left: 4px solid #1565c0; padding: 0.6em 1em; }
</style>
</head>
<body>
$body
</body>
</html>
""")


def _fmt(value: Any, spec: str = "") -> str:
    """A figure for a cell; missing values show as an en dash, never as an error."""
    if value is None or value == "":
        return "–"
    try:
        return format(value, spec)
    except (TypeError, ValueError):
        return escape(str(value))


def _trial_name(t: FrozenTrial) -> str:
    preset = preset_of(t)
    return f"{t.number} ({escape(preset)})" if preset else str(t.number)


def _header(c: ReportContent) -> str:
    states = ", ".join(f"{n} {s.lower()}" for s, n in sorted(c.cost.states.items()))
    lines = [f"<h1>Study {escape(c.study_name)}</h1>",
             f"<p class=\"meta\">objective: {escape(c.objectives)} · storage: {escape(c.storage)} · "
             f"{c.trial_count} trial(s): {escape(states) or 'none'} · written {escape(when(c.generated))}</p>"]
    if c.max_si_rmse is not None:
        lines.append(f"<p class=\"meta\">accuracy floor: si-RMSE ≤ {c.max_si_rmse:g}; trials above it are "
                     "infeasible and never the best.</p>")
    complete = c.cost.states.get("COMPLETE", 0)
    if c.best is None and complete:
        lines.append(f"<p class=\"warning\">None of the {complete} complete trial(s) meets the accuracy floor "
                     f"(si-RMSE ≤ {c.max_si_rmse:g}): there is no best trial yet. Run more trials, or finalize one "
                     "by number with <code>nas finalize --trial N</code>.</p>")
    elif c.best is None:
        failed = c.cost.states.get("FAIL", 0)
        pruned = c.cost.states.get("PRUNED", 0)
        lines.append(f"<p class=\"warning\">No trial completed: {failed} failed and {pruned} pruned, so there is "
                     f"nothing to rank or plot. Why they stopped is listed under <a href=\"#cost\">Cost</a>.</p>")
    else:
        a = attrs(c.best)
        lines.append(f"<p>Best trial: <strong>{_trial_name(c.best)}</strong>, Final Score "
                     f"<strong>{a['final_score']:.4g}</strong> (si-RMSE {a['si_rmse']:.4f}, "
                     f"{a['latency_ms']:.1f} ms on {escape(str(a.get('device', '?')))}): "
                     f"{escape(arch_line(a.get('arch', {})))}. Ship it with "
                     f"<code>nas finalize --study {escape(c.study_name)}</code>.</p>")
    return "\n".join(lines)


def _figure(src: str, alt: str, caption: str, css: str = "figure") -> str:
    return (f"<figure><img class=\"{css}\" src=\"{escape(src)}\" alt=\"{escape(alt)}\">"
            f"<figcaption>{caption}</figcaption></figure>")


def _code_spans(text: str) -> str:
    """Escaped text with its `code` spans as <code>."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", escape(text))


def _quality(c: ReportContent) -> str:
    if not c.quality:
        return ""
    return f"<h2 id=\"quality\">What these figures are worth</h2>\n<p class=\"note\">{_code_spans(c.quality)}</p>"


def _pareto(c: ReportContent) -> str:
    if c.pareto_png is None:
        return ""
    drawn = c.pareto
    levels = ", ".join(f"{s:.3g}" for s in drawn.levels)
    parts = ["Every complete trial: colour is the backbone, the marker the precision (circle fp32, square int8); "
             "seed presets have a black edge and their name"]
    if drawn.front:
        parts.append("the grey line is the Pareto front")
    else:
        parts.append("the Pareto front is a single trial, so no line is drawn")
    if levels:
        parts.append(f"the dashed lines are equal Final Score ({escape(levels)}): a point below a line beats that score")
    if c.max_si_rmse is not None and drawn.floor:
        parts.append(f"the red dotted line is the accuracy floor (si-RMSE {c.max_si_rmse:g}): trials above it are "
                     "infeasible")
    elif c.max_si_rmse is not None:
        parts.append(f"the accuracy floor (si-RMSE {c.max_si_rmse:g}) lies outside the si-RMSE range shown")
    caption = "; ".join(parts) + "."
    return "<h2>si-RMSE against latency</h2>\n" + _figure(c.pareto_png, "Pareto front", caption)


def _history(c: ReportContent) -> str:
    if c.history_png is None:
        return ""
    return "<h2>Optimisation history</h2>\n" + _figure(
        c.history_png, "optimisation history",
        "The best Final Score so far, by trial number and by wall-clock time (trial completion).")


def _importances(c: ReportContent) -> str:
    if c.importances is None:
        return f"<h2>Parameter importances</h2>\n<p>{escape(c.importance_reason)}</p>"
    complete = c.importance_trials
    rows = "".join(f"<tr><td class=\"text\">{escape(name)}</td><td>{value:.3f}</td></tr>"
                   for name, value in c.importances.items())
    evidence = (f"They rest on {complete} complete trials: the top {top_count(complete)} by Final Score against the "
                "rest, so a parameter's share moves with every few trials added.")
    figure = _figure(c.importance_png, "parameter importances",
                     f"Parameter importances for the Final Score ({escape(METHOD)}; optuna.importance), summing to "
                     "1.", css="figure small") if c.importance_png else ""
    return (f"<h2>Parameter importances</h2>\n<p>{evidence}</p>\n{figure}\n"
            f"<table><tr><th>parameter</th><th>importance</th></tr>{rows}</table>")


TABLE_HEADER = ("trial", "architecture", "params", "MMACs", "precision", "si-RMSE", "RMSE (m)", "log10", "REL",
                "latency ms (median)", "p90 ms", "device", "Final Score", "preview")


def _table(c: ReportContent) -> str:
    if not c.table:
        return ""
    head = "".join(f"<th>{h}</th>" for h in TABLE_HEADER)
    rows = []
    for t in c.table:
        a = attrs(t)
        preview = c.previews.get(t.number)
        link = f"<a href=\"{escape(preview)}\">preview</a>" if preview else "–"
        macs = a.get("macs")
        cells = [f"<td class=\"text\">{_trial_name(t)}</td>",
                 f"<td class=\"text\">{escape(arch_line(a.get('arch', {})))}</td>",
                 f"<td>{_fmt(a.get('params'), ',')}</td>",
                 f"<td>{_fmt(None if macs is None else macs / 1e6, ',.0f')}</td>",
                 f"<td class=\"text\">{escape(str(precision_of(t)))}</td>",
                 f"<td>{_fmt(a.get('si_rmse'), '.4f')}</td>", f"<td>{_fmt(a.get('rmse'), '.3f')}</td>",
                 f"<td>{_fmt(a.get('log10'), '.4f')}</td>", f"<td>{_fmt(a.get('rel'), '.4f')}</td>",
                 f"<td>{_fmt(a.get('latency_ms'), '.1f')}</td>", f"<td>{_fmt(a.get('latency_p90_ms'), '.1f')}</td>",
                 f"<td class=\"text\">{escape(str(a.get('device', '–')))}</td>",
                 f"<td><strong>{_fmt(a.get('final_score'), '.4g')}</strong></td>", f"<td>{link}</td>"]
        classes = [name for name, on in (("preset", a.get("preset")), ("infeasible", not is_feasible(t))) if on]
        css = f" class=\"{' '.join(classes)}\"" if classes else ""
        rows.append(f"<tr id=\"trial-{t.number}\"{css}>{''.join(cells)}</tr>")
    floor = (f" Greyed rows are above the accuracy floor (si-RMSE {c.max_si_rmse:g}): infeasible."
             if c.max_si_rmse is not None else "")
    return ("<h2>Top trials and seed presets</h2>\n<p>Best Final Score first; seed presets are shaded and named."
            f"{floor} "
            "Figures are those of the TFLite model: validation split at deployment resolution, latency on the "
            "device.</p>\n" f"<table><tr>{head}</tr>\n" + "\n".join(rows) + "</table>")


def _int8_loss(c: ReportContent) -> str:
    """The table's int8 trials that lost more than the drift margin to their float32 twin, with the layer where
    the error grows most (`nas finalize` locates it in full for the shipped model)."""
    rows = []
    for t in c.table:
        a = attrs(t)
        if worst := a.get("int8_worst_layer"):
            rows.append(f"<tr><td class=\"text\">{_trial_name(t)}</td><td>{_fmt(a.get('si_rmse'), '.4f')}</td>"
                        f"<td>{_fmt(a.get('si_rmse_fp32'), '.4f')}</td>"
                        f"<td class=\"text\">{escape(str(worst.get('layer')))}</td>"
                        f"<td class=\"text\">{escape(str(worst.get('op')))}</td>"
                        f"<td>{_fmt(worst.get('growth'), '+.4f')}</td></tr>")
    if not rows:
        return ""
    return ("<h2>int8 accuracy loss</h2>\n<p>int8 trials of the table whose si-RMSE is worse than their float32 "
            "twin's by more than the drift margin, and the layer where the error grows most (relative RMS error "
            "against the float32 tensor, less that of the layer's inputs).</p>\n<table><tr><th>trial</th>"
            "<th>si-RMSE int8</th><th>float32 twin</th><th>layer</th><th>op</th><th>growth</th></tr>"
            + "".join(rows) + "</table>")


def _previews(c: ReportContent) -> str:
    shown = [t for t in c.preview_trials if t.number in c.previews]
    if not shown:
        return ""
    items = [_figure(c.previews[t.number], f"preview of trial {t.number}",
                     f"Trial {_trial_name(t)}, score {score_of(t):.4g}: {escape(PREVIEW_CAPTION)}.")
             for t in shown]
    return "<h2>Previews of the top trials</h2>\n" + "\n".join(items)


def _cost(c: ReportContent) -> str:
    cost = c.cost
    states = "".join(f"<tr><td class=\"text\">{escape(s)}</td><td>{n}</td></tr>" for s, n in sorted(cost.states.items()))
    parts = ["<h2 id=\"cost\">Cost</h2>", f"<table><tr><th>state</th><th>trials</th></tr>{states}</table>"]
    if cost.trials_with_stages:
        stages = [s for s in STAGES if s in cost.stage_totals_s] + \
                 [s for s in cost.stage_totals_s if s not in STAGES]
        rows = "".join(f"<tr><td class=\"text\">{escape(s)}</td><td>{cost.stage_totals_s[s]:,.1f}</td>"
                       f"<td>{cost.stage_means_s[s]:,.1f}</td></tr>" for s in stages)
        parts.append(f"<p>Seconds per stage over the {cost.trials_with_stages} trial(s) that recorded them; "
                     f"finished trials took {cost.trial_seconds / 60:,.1f} minutes of wall-clock in all.</p>"
                     f"<table><tr><th>stage</th><th>total s</th><th>mean s per trial</th></tr>{rows}</table>")
    if cost.reasons:
        rows = "".join(f"<tr><td class=\"text\">{escape(g.state)}</td><td class=\"text\">{escape(g.cause)}</td>"
                       f"<td class=\"text\">{escape(g.detail)}</td><td>{g.count}</td>"
                       f"<td class=\"text\">{', '.join(map(str, g.trials))}</td></tr>"
                       for g in cost.reasons)
        parts.append("<p>Failed and pruned trials by cause (what screened them, else the first line of "
                     "<code>fail_reason</code> up to its first figure); each figure of the reason is shown as its "
                     "spread over the group, min–max.</p>"
                     "<table><tr><th>state</th><th>cause</th><th>reason (figures: min–max)</th><th>count</th>"
                     f"<th>trials</th></tr>{rows}</table>")
    return "\n".join(parts)


def _fingerprint(print_: dict[str, Any]) -> str:
    if not print_:
        return "–"
    temp = print_.get("temperature_c")
    parts = [print_.get("cpu"), f"kernel {print_['kernel']}" if print_.get("kernel") else None,
             " ".join(str(v) for v in (print_.get("runtime"), print_.get("runtime_version")) if v),
             f"governor {print_['cpu_governor']}" if print_.get("cpu_governor") else None,
             f"{temp:.1f} °C" if isinstance(temp, (int, float)) else None]
    return escape(", ".join(str(p) for p in parts if p))


def _devices(c: ReportContent) -> str:
    if not c.devices and not c.reference_count:
        return ""
    parts = ["<h2 id=\"devices\">Devices</h2>"]
    if c.devices:
        rows = "".join(f"<tr><td class=\"text\">{escape(d.device)}</td><td>{d.trials}</td>"
                       f"<td>{_fmt(d.median_latency_ms, '.2f')}</td><td>{d.flagged}</td>"
                       f"<td class=\"text\">{_fingerprint(d.fingerprint)}</td></tr>" for d in c.devices)
        parts.append("<p>Complete trials by the device that timed them. A flagged trial was timed while its device "
                     "disagreed with the pool (between its last agreeing reference figure and the one that took it "
                     "out): compare its latency with care.</p>"
                     "<table><tr><th>device</th><th>trials</th><th>median latency ms</th><th>flagged</th>"
                     f"<th>fingerprint of the latest measurement</th></tr>{rows}</table>")
    if c.reference_png:
        parts.append(_figure(c.reference_png, "reference figures per device",
                             f"{c.reference_count} timing(s) of the reference model; {c.reference_out} judged out "
                             f"(red crosses), {c.flagged_windows} window(s) of figures flagged."))
    return "\n".join(parts)


def render_page(c: ReportContent) -> str:
    body = "\n".join(part for part in (_header(c), _quality(c), _pareto(c), _history(c), _importances(c), _table(c),
                                       _int8_loss(c), _devices(c), proxy_section(c.proxy_check), _previews(c), _cost(c)) if part)
    return PAGE.substitute(title=escape(f"nas report: {c.study_name}"), body=body)
