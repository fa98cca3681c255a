"""Each trial's note in optuna-dashboard: what it is, its figures, why it stopped, its preview.

The dashboard's trial page lists user attributes as raw key/value rows (long ones run off its edge);
the note says the same in a few lines a person reads: the architecture in one line, the figures
rounded, the reason a pruned or failed trial stopped, and the trial's `preview.png` from the artifact
store. `nas.trial.objective` writes it when the trial ends, however it ends; the record keeps the raw values.
"""

from __future__ import annotations

import optuna
from optuna.artifacts import get_all_artifact_meta
from optuna_dashboard import save_note

from nas.infra.console import err
from nas.trial.display import arch_line, rounded, when
from nas.trial.record import (Trial, arch_of, attrs, encoder_weights_of, fail_reason_of, preset_of,
                              screened_before_training, stage_seconds_of)

FOOTER = "_Written by `nas run` when the trial ended; the trial's user attributes hold every raw figure._"
PREVIEW_NAME = "preview.png"
REASON_CHARS = 600  # a failure's message beyond this is in the `fail_reason` attribute


def outcome_of(exc: BaseException | None, trial: Trial | None = None) -> str:
    """How the trial ended, from what the objective raised: complete, pruned (before or while training), failed,
    or interrupted."""
    if exc is None:
        return "complete"
    if isinstance(exc, optuna.TrialPruned):
        return "pruned before training" if trial is not None and screened_before_training(trial) else "pruned"
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    return "failed"


def _figures(a) -> list[str]:
    """The deployed model's figures, rounded, or the size and latency known before it stopped."""
    lines = []
    if "final_score" in a:
        lines.append(f"- **Final Score:** {rounded(a['final_score'])} (si-RMSE {rounded(a.get('si_rmse'))}, "
                     f"RMSE {rounded(a.get('rmse'), 3)} m, log10 {rounded(a.get('log10'))}, REL {rounded(a.get('rel'))})")
        lines.append(f"- **Latency:** {rounded(a.get('latency_ms'))} ms median, p90 {rounded(a.get('latency_p90_ms'))} "
                     f"ms on `{a.get('device', '?')}` ({a.get('threads', '?')} thread(s)"
                     + (f", measured {when(a['measure_start'])})" if a.get("measure_start") else ")"))
        if "max_si_rmse" in a:
            verdict = "meets" if a.get("si_rmse", float("inf")) <= a["max_si_rmse"] else "is **above**"
            lines.append(f"- **Accuracy floor:** {verdict} si-RMSE ≤ {rounded(a['max_si_rmse'])}")
    elif "latency_estimate_ms" in a:
        lines.append(f"- **Latency:** {rounded(a['latency_estimate_ms'], 3)} ms "
                     f"({a.get('latency_estimate_source', 'estimated')})")
    size = [f"{rounded(a['params'])} parameters"] if "params" in a else []
    if "macs" in a:
        size.append(f"{rounded(a['macs'] / 1e6, 3)} MMACs per frame")
    if "tflite_bytes" in a:
        size.append(f"`.tflite` {rounded(a['tflite_bytes'] / 1e6, 3)} MB")
    if size:
        lines.append(f"- **Size:** {', '.join(size)}")
    return lines


def _reason(trial: Trial) -> list[str]:
    reason = (fail_reason_of(trial) or "").strip()
    if not reason:
        return []
    first, *rest = reason.splitlines()
    shown = first if len(first) <= REASON_CHARS else first[:REASON_CHARS] + " …"
    more = " (more in the `fail_reason` attribute)" if rest or len(first) > REASON_CHARS else ""
    shown = shown.replace("`", "'")
    return [f"- **Why it stopped:** `` {shown} ``{more}"]


def trial_note(trial: Trial, outcome: str, preview_url: str | None = None) -> str:
    """The note's Markdown; `preview_url` is the trial's preview in the dashboard (/artifacts/...)."""
    a = attrs(trial)
    preset = preset_of(trial)
    title = f"## Trial {trial.number}" + (f" (seed preset `{preset}`)" if preset else "") + f": {outcome}"
    arch = arch_of(trial)
    lines = [title, ""]
    if arch:  # a few parts a line: the dashboard's note does not wrap a long one
        parts = arch_line(arch).split(" · ")
        lines.append(f"- **Architecture:** {' · '.join(parts[:3])}")
        lines += [f"    - {' · '.join(parts[i:i + 3])}" for i in range(3, len(parts), 3)]
    else:
        lines.append("- **Architecture:** not sampled")
    if arch:
        lines.append(f"- **Precision:** {a.get('precision', arch.get('precision', 'fp32'))}")
    lines += _figures(a)
    lines += _reason(trial)
    if weights := encoder_weights_of(trial):
        lines.append(f"- **Encoder weights:** {weights.get('source', '?')}")
    if seconds := stage_seconds_of(trial):
        lines.append("- **Seconds:** " + ", ".join(f"{stage} {rounded(float(s), 3)}" for stage, s in seconds.items()))
    if preview_url:
        lines += ["", "Input | ground truth | prediction | error on the first validation frame (depth in metres, grey "
                      "where the ground truth is unknown):", "", f"![{PREVIEW_NAME}]({preview_url})"]
    lines += ["", FOOTER]
    return "\n".join(lines)


def preview_url(trial: optuna.Trial) -> str | None:
    """Where the dashboard serves the trial's `preview.png`, or None when it has none."""
    meta = next((m for m in get_all_artifact_meta(trial) if m.filename == PREVIEW_NAME), None)
    if meta is None:
        return None
    return f"/artifacts/{trial.study._study_id}/{trial._trial_id}/{meta.artifact_id}"


def write_trial_note(trial: optuna.Trial, exc: BaseException | None = None) -> None:
    """Save the trial's note as it ends (`exc`: what the objective raised, None when it completed). A note that
    cannot be written is a warning: the trial's outcome stands."""
    try:
        save_note(trial, trial_note(trial, outcome_of(exc, trial), preview_url(trial)))
    except Exception as failure:  # noqa: BLE001 - a note is never worth a trial
        err.print(f"warning: trial {trial.number}: its dashboard note was not written ({type(failure).__name__}: "
                  f"{failure})", markup=False, highlight=False)
