"""The study's note in optuna-dashboard: what this search is, in Markdown, beside its trials.

Someone opening the dashboard sees the data set, space, devices, budget, teacher and precisions
without reading the command line that started the run, and how to ship the best trial. The note is
rewritten at each `nas run` (settings may change on resume) unless a person has edited it: the
footer line marks a note as ours, and removing it keeps the note as the person wrote it.
"""

from __future__ import annotations

import optuna
from optuna_dashboard import get_note, save_note

from nas.config import BUDGETS, RunConfig
from nas.hardware.profile import DeviceProfile
from nas.space import SearchSpace
from nas.trial.record import record_study_budget

FOOTER = "_Written by `nas run` at each start; delete this line to keep your own edits._"


def _data_line(config: RunConfig) -> str:
    if config.data is not None:
        return f"`{config.data}`"
    return (f"synthetic scenes under `{config.results / 'data'}` ({config.synth_train} train, {config.synth_val} "
            f"validation, {config.synth_test} test frames, seed {config.synth_seed})")


def _teacher_line(config: RunConfig) -> str:
    if not config.distill:
        return "none (`--no-distill`): supervised loss only"
    where = config.teacher if config.teacher is not None else config.results / "teacher" / config.budget
    return f"`{where}` (distillation λ {config.distill_lambda}, unless the space samples it)"


def _weights_line(config: RunConfig) -> str:
    """Where encoders start from; each trial's `encoder_weights` says which file (and hash) it used."""
    setting = config.pretrained
    if setting == "auto":
        return "`auto`: ImageNet weights where the Hugging Face cache has them, random otherwise"
    if setting == "none":
        return "`none`: random initialisation"
    if setting == "imagenet":
        return "`imagenet`: timm's ImageNet weights (Hugging Face cache)"
    return f"files in `{setting}` (`<backbone>.safetensors` / `.pth`)"


def _device_line(device: DeviceProfile) -> str:
    where = f"{device.host}:{device.port}" if device.kind == "ssh" else "this machine"
    return f"`{device.name}` ({device.kind}, {where}, {'/'.join(map(str, device.thread_counts))} thread(s))"


def quality_note(budget_name: str, study: str, synthetic: bool) -> str:
    """What the study's budget means for the figures and previews, and how to get a usable model (plain text with
    `code` spans: the study note and the report both show it)."""
    budget = BUDGETS.get(budget_name)
    if budget is None:
        return f"Budget `{budget_name}`: unknown to this version of nas."
    recipe = (f"Budget `{budget.name}`: each candidate trains {budget.steps} steps × batch {budget.batch_size} at "
              f"{budget.train_width}×{budget.train_height} internal resolution.")
    full = BUDGETS["full"]
    if budget.name == "full":
        verdict = ("The search ranks networks on this training; the trials' models are a search's, not a release's.")
    else:
        verdict = ("That is enough to rank networks against each other on short training, not to make a usable "
                   "model: at this budget every prediction is a coarse blob. That is the budget, not the tool.")
    how = (f"For a usable model, retrain the best architecture with `nas finalize --study {study} --budget full` "
           f"({full.steps} steps × batch {full.batch_size} at {full.train_width}×{full.train_height}), on a machine "
           "with a GPU (training runs on it when PyTorch sees one)"
           + (", on real data (`--data`, MAI 2021 layout) instead of the synthetic scenes" if synthetic
              else ", on the study's real data")
           + ", with pretrained encoders (`--pretrained imagenet`, or `auto` with the weights in the Hugging Face "
             "cache).")
    return f"{recipe} {verdict} {how}"


def study_note(config: RunConfig, space: SearchSpace, devices: list[DeviceProfile]) -> str:
    """The note's Markdown."""
    budget = config.train_budget
    precision = next((p for p in space.params if p.name == "precision"), None)
    precisions = ", ".join(precision.choices) if precision is not None and precision.choices else "fp32"
    objective = (f"Final Score `{config.score_rule.formula}`, maximised"
                 if config.objective == "score"
                 else "Pareto front of si-RMSE and latency (ms), both minimised")
    lines = [
        f"## nas study `{config.study}`",
        "",
        f"- **Objective:** {objective}",
        *([f"- **Accuracy floor:** si-RMSE ≤ {config.max_si_rmse:g} (`max_si_rmse`): trials above it are infeasible, "
           "never the best"] if config.max_si_rmse is not None else []),
        f"- **Data set:** {_data_line(config)}; scored at {config.deploy_width}×{config.deploy_height}",
        f"- **Search space:** `{space.name}` (`{config.space}`)",
        f"- **Device(s):** {', '.join(_device_line(d) for d in devices)}",
        f"- **Budget:** `{budget.name}`: {budget.steps} steps × batch {budget.batch_size} at "
        f"{budget.train_width}×{budget.train_height} internal; {config.trials} trained trial(s) targeted",
        f"- **Teacher:** {_teacher_line(config)}",
        f"- **Encoder weights:** {_weights_line(config)}; each trial records its own (`encoder_weights`)",
        f"- **Precision choices:** {precisions}",
        f"- **Sampler / pruner:** {config.sampler} / {config.pruner if config.objective == 'score' else 'none'}",
        "",
        f"**Quality:** {quality_note(config.budget, config.study, config.data is None)}",
        "",
        "Each trial's artifacts hold its `model.tflite`, `preview.png` (input | ground truth | prediction | error on "
        "the first validation frame, depth in metres, grey where the ground truth is unknown) and arch JSON; each "
        "trial's note says what it is, its figures and why it stopped.",
        "",
        f"**Finalize:** `nas finalize --study {config.study} --storage {config.storage_shown}` trains the best "
        "trial fully and ships its `.tflite`; `nas report` writes an HTML report.",
        "",
        FOOTER,
    ]
    return "\n".join(lines)


def write_study_note(study: optuna.Study, config: RunConfig, space: SearchSpace, devices: list[DeviceProfile]) -> None:
    """Save the note unless a person's own note is there (one without our footer), and record the study's budget
    (the report says what it means)."""
    record_study_budget(study, config.budget)
    current = get_note(study)
    text = study_note(config, space, devices)
    if current == text or (current.strip() and FOOTER not in current):
        return
    save_note(study, text)
