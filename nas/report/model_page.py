"""`nas finalize`'s page: the shipped model's figures beside its search trial's, training, parity, previews.

Built from the release record (`metrics.json`) with the study report's page helpers, so both pages
look and escape alike, and open from their folder with no server.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from html import escape
from pathlib import Path
from typing import Any

from nas.hardware import sustained
from nas.metrics import ScoreRule
from nas.report.page import PAGE, _figure, _fmt
from nas.report.trials import arch_line
from nas.trial.display import when
from nas.infra.files import atomic_write_text

# Release files the page links when they are in the folder.
RELEASE_FILES = (("model.tflite", "ship this"), ("model.onnx", "ONNX"), ("model.pt", "PyTorch weights"),
                 ("metrics.json", "every figure on this page"), ("report.md", "this page in Markdown"),
                 ("preview.png", "first validation image, as in the search"),
                 ("sustained.png", "latency and temperature under sustained load"))

# The trial attributes compared, as (label, key, format); `record["search_trial"]` holds the trial's.
FIGURES: tuple[tuple[str, str, Callable[[Any], str]], ...] = (
    ("Final Score", "final_score", lambda v: _fmt(v, ".4f")),
    ("si-RMSE", "si_rmse", lambda v: _fmt(v, ".4f")),
    ("RMSE (m)", "rmse", lambda v: _fmt(v, ".3f")),
    ("log10", "log10", lambda v: _fmt(v, ".4f")),
    ("REL", "rel", lambda v: _fmt(v, ".4f")),
    ("latency median (ms)", "latency_ms", lambda v: _fmt(v, ".1f")),
    ("latency p90 (ms)", "latency_p90_ms", lambda v: _fmt(v, ".1f")),
    ("device", "device", lambda v: _fmt(v)),
    ("threads", "threads", lambda v: _fmt(v)),
    ("precision", "precision", lambda v: _fmt(v)),
    ("parameters", "params", lambda v: _fmt(v, ",")),
    ("MACs (M)", "macs", lambda v: _fmt(None if v in (None, "") else v / 1e6, ",.0f")),
    ("TFLite file (MB)", "tflite_bytes", lambda v: _fmt(None if v in (None, "") else v / 1e6, ".2f")),
)
SEARCH_KEYS = tuple(key for _, key, _ in FIGURES) + ("stage_seconds",)

PARITY_CHECKS = {"onnx_vs_torch": "ONNX against PyTorch",
                 "tflite_vs_onnx": "TFLite (float32 model) against ONNX",
                 "int8_vs_onnx": "int8 TFLite against ONNX (measured, never failed: it is the model's accuracy)",
                 "fp32_twin_vs_onnx_mismatch": "float32 twin of the int8 conversion against ONNX (out of "
                                               "tolerance: recorded, not failed)"}
PARITY_FIGURES = {"max_abs_err_m": ("max |difference|", ".3g", " m"),
                  "median_rel_err": ("median relative difference", ".3g", ""),
                  "si_rmse": ("si-RMSE", ".4f", "")}  # quantization_error's figures: (label, format, unit)


def search_figures(attrs: dict[str, Any]) -> dict[str, Any]:
    """The search trial's attributes the page compares with the final model (what metrics.json keeps)."""
    return {k: attrs[k] for k in SEARCH_KEYS if k in attrs}


def _figures_table(record: dict[str, Any]) -> str:
    search = record.get("search_trial") or {"final_score": record.get("search_score"),
                                            "si_rmse": record.get("search_si_rmse")}
    rows = "".join(f"<tr><td class=\"text\">{escape(label)}</td><td>{fmt(search.get(key))}</td>"
                   f"<td><strong>{fmt(record.get(key))}</strong></td></tr>" for label, key, fmt in FIGURES)
    search_train = (search.get("stage_seconds") or {}).get("train")
    rows += (f"<tr><td class=\"text\">training time (s)</td><td>{_fmt(search_train, ',.0f')}</td>"
             f"<td><strong>{_fmt(record.get('train_seconds'), ',.0f')}</strong></td></tr>")
    return (f"<h2>Search trial against final model</h2>\n<p>Errors are those of the TFLite model on validation "
            f"frames at {escape(str(record.get('resolution', '?')))} ({_fmt(record.get('val_images'))} for the final "
            f"model; the search used its budget's frames); latency is the median on the device.</p>\n"
            f"<table><tr><th>figure</th><th>search trial {_fmt(record.get('trial'))}</th><th>final model</th></tr>"
            f"{rows}</table>")


def _training(record: dict[str, Any]) -> str:
    items = [f"budget <strong>{_fmt(record.get('budget'))}</strong>", f"{_fmt(record.get('train_steps'), ',')} steps",
             f"{_fmt(record.get('train_seconds'), ',.0f')} s"]
    if record.get("distill_lambda"):
        items.append(f"distillation λ {_fmt(record['distill_lambda'], '.2f')}")
    stages = record.get("stage_seconds") or {}
    stage_text = ", ".join(f"{escape(k)} {_fmt(v, ',.1f')} s" for k, v in stages.items())
    return (f"<h2>Training</h2>\n<p>{', '.join(items)}.</p>"
            + (f"\n<p class=\"meta\">Seconds per stage: {stage_text}.</p>" if stage_text else ""))


def _parity_value(value: Any) -> str:
    if isinstance(value, dict):
        parts = []
        for key, figure in value.items():
            label, spec, unit = PARITY_FIGURES.get(key, (key, ".4g", ""))
            parts.append(f"{escape(label)} {_fmt(figure, spec)}{unit}")
        return ", ".join(parts)
    if isinstance(value, str):  # a check's finding in words
        return escape(value)
    return f"max |difference| {_fmt(value, '.3g')} m"


def _parity(record: dict[str, Any]) -> str:
    parity = record.get("parity") or {}
    if not parity:
        return "<h2>Parity checks</h2>\n<p>No parity figures recorded.</p>"
    rows = "".join(f"<tr><td class=\"text\">{escape(PARITY_CHECKS.get(name, name))}</td>"
                   f"<td class=\"text\">{_parity_value(value)}</td></tr>" for name, value in parity.items())
    return ("<h2>Parity checks</h2>\n<p>Each conversion step against the one before, on one validation frame; "
            "the float32 steps must agree within the configured tolerance or the export fails.</p>\n"
            f"<table><tr><th>check</th><th>figures</th></tr>{rows}</table>")


def _previews(preview_png: str | None, caption: str) -> str:
    if preview_png is None:
        return f"<h2>Previews</h2>\n<p>{escape(caption)}</p>"
    return "<h2>Previews</h2>\n" + _figure(preview_png, "previews of the final model", escape(caption))


def _files(out: Path) -> str:
    items = [f"<li><a href=\"{escape(name)}\">{escape(name)}</a>: {escape(what)}</li>"
             for name, what in RELEASE_FILES if (out / name).is_file()]
    return "<h2>Files</h2>\n<ul>" + "".join(items) + "</ul>" if items else ""


def _threads_curve(record: dict[str, Any]) -> str:
    """The thread curve (count → median ms) with the count the model was shipped for marked, and which rule chose
    it; one sentence when only one count was timed."""
    curve = {int(k): v for k, v in ((record.get("latency") or {}).get("threads_curve") or {}).items()}
    shipped = record.get("threads")
    if len(curve) < 2:
        return (f"<p>Timed at {_fmt(shipped)} thread{'s' if shipped != 1 else ''} only (the profile's "
                "<code>threads</code>).</p>") if shipped is not None else ""
    fixed = record.get("threads_fixed")
    if fixed is not None:
        rule = f"the profile fixes it (<code>threads_fixed: {_fmt(fixed)}</code>)"
    elif "threads_fixed" in record or shipped == min(curve, key=lambda n: (curve[n], n)):
        rule = "it was the fastest count timed"
    else:  # a release made before the rule was recorded, shipped at a count that was not the fastest
        rule = "the profile fixed it (<code>threads_fixed</code>; not the fastest count timed)"
    rows = "".join(f"<tr><td>{_fmt(n)}</td><td>{'<strong>' if n == shipped else ''}{_fmt(ms, '.2f')}"
                   f"{'</strong>' if n == shipped else ''}</td><td class=\"text\">"
                   f"{'shipped for' if n == shipped else ''}</td></tr>" for n, ms in sorted(curve.items()))
    return (f"<p>Median latency by thread count (each count's fastest burst). The model is shipped for "
            f"<strong>{_fmt(shipped)} threads</strong>: {rule}.</p>\n"
            f"<table><tr><th>threads</th><th>median (ms)</th><th></th></tr>{rows}</table>")


def _clock(record: dict[str, Any]) -> str:
    """The CPU governor and clock the figures were timed at; what the runner could not read shows as unknown."""
    latency = record.get("latency") or {}
    if not latency:
        return ""

    def mhz(khz: Any) -> str:
        return "unknown" if not khz else f"{khz / 1000:,.0f} MHz"

    governor = latency.get("cpu_governor") or "unknown"
    note = ("" if governor == "performance" else
            " (the clock follows the load, so a burst may start slow)" if governor != "unknown" else
            " (no cpufreq on the device: the clock cannot be checked)")
    return (f"<p>CPU governor <strong>{escape(str(governor))}</strong>{escape(note)}; clock after timing "
            f"{mhz(latency.get('cpu_cur_freq_khz'))} of at most {mhz(latency.get('cpu_max_freq_khz'))}"
            + (f" on {escape(str(latency['cpu']))}" if latency.get("cpu") else "") + ".</p>")


def _sustained(record: dict[str, Any], out: Path) -> str:
    """The sustained-load figure and its numbers; what an older release without them says."""
    run = record.get("sustained")
    if not run:
        return "<p>Not timed under sustained load (a release made before <code>nas finalize</code> did).</p>"
    text = (f"<p>Under sustained load (the model invoked without pause): {escape(sustained.summary(run))}. The "
            "Final Score uses the burst figure above; this shows what the device does after a while of work.</p>")
    if (caution := sustained.warning(run)) is not None:
        text += f"\n<p class=\"warning\"><strong>Under load:</strong> {escape(caution)}</p>"
    if (out / "sustained.png").is_file():
        text += "\n" + _figure("sustained.png", "latency and temperature under sustained load",
                               "Median latency of the invokes in each sample (about one a second, blue) and the "
                               "temperature (orange, where the device reports it); red: the first and last "
                               "stretch's medians.")
    return text


def _on_the_device(record: dict[str, Any], out: Path) -> str:
    """Threads, clock and sustained load: what the figures were timed at and how the device holds them."""
    parts = [part for part in (_threads_curve(record), _clock(record)) if part]
    if not parts and not record.get("sustained"):
        return ""
    return "<h2>On the device</h2>\n" + "\n".join(parts + [_sustained(record, out)])


def _score_formula(record: dict[str, Any]) -> str:
    """The Final Score's formula as the release computed it (a release made before it was recorded: from C)."""
    if formula := record.get("score_formula"):
        return str(formula)
    return ScoreRule(alpha=record.get("score_alpha", 10.0), c=record.get("score_c", 1.0)).formula


def _int8_drift(record: dict[str, Any]) -> str:
    """Where an int8 model lost accuracy against its float32 twin (only when it lost more than the margin)."""
    drift = record.get("int8_drift")
    if not drift:
        return ""
    rows = "".join(f"<tr><td class=\"text\">{escape(str(r['layer']))}</td><td class=\"text\">{escape(str(r['op']))}</td>"
                   f"<td>{_fmt(r['rel_rmse'], '.4f')}</td><td>{_fmt(r['growth'], '+.4f')}</td></tr>"
                   for r in drift.get("worst", []))
    curve = ", ".join(f"{p['images']} images: {_fmt(p['si_rmse'], '.4f')}" for p in drift.get("calibration", []))
    return ("<h2>int8 accuracy loss</h2>\n"
            f"<p>si-RMSE {_fmt(drift.get('si_rmse_int8'), '.4f')} against {_fmt(drift.get('si_rmse_fp32'), '.4f')} "
            f"for the float32 twin (margin {_fmt(drift.get('margin'), 'g')}). The layers where the error grows "
            "most (relative RMS error against the float32 model's tensor, and its growth over the layer's "
            "inputs):</p>\n<table><tr><th>layer</th><th>op</th><th>rel. RMS</th><th>growth</th></tr>"
            f"{rows}</table>" + (f"\n<p>si-RMSE by calibration-set size: {escape(curve)}.</p>" if curve else ""))


def render_model_page(record: dict[str, Any], out: Path, preview_png: str | None, preview_caption: str) -> str:
    """The page's HTML; `preview_png` is a file name in `out` (None: `preview_caption` says why there is none)."""
    header = (f"<h1>Final model: trial {_fmt(record.get('trial'))} of study {escape(str(record.get('study')))}</h1>\n"
              f"<p class=\"meta\">{escape(str(record.get('precision', 'fp32')))} · written "
              f"{escape(when(record.get('created')))}</p>\n"
              f"<p>Final Score <strong>{_fmt(record.get('final_score'), '.4f')}</strong> "
              f"({escape(_score_formula(record))}) with si-RMSE "
              f"{_fmt(record.get('si_rmse'), '.4f')} and {_fmt(record.get('latency_ms'), '.1f')} ms on "
              f"{escape(str(record.get('device', '?')))}: {escape(arch_line(record.get('arch', {})))}.</p>")
    if worse := record.get("worse_than_search"):  # the final model scores well below its search trial
        header += f"\n<p class=\"warning\"><strong>Worse than its search trial:</strong> {escape(worse['line'])}</p>"
    arch = f"<h2>Architecture</h2>\n<pre>{escape(json.dumps(record.get('arch', {}), indent=2))}</pre>"
    body = "\n".join((header, _figures_table(record), _on_the_device(record, out), _training(record),
                      _parity(record), _int8_drift(record),
                      _previews(preview_png, preview_caption), arch, _files(out)))
    title = f"nas finalize: study {record.get('study')}, trial {record.get('trial')}"
    return PAGE.substitute(title=escape(title), body=body)


def write_model_page(out: Path, record: dict[str, Any], preview_png: str | None, preview_caption: str) -> Path:
    """Write `out/report.html`; returns its path."""
    path = out / "report.html"
    atomic_write_text(path, render_model_page(record, out, preview_png, preview_caption))
    return path
