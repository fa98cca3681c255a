"""The `nas` command: parse, load config, call one function. No logic lives here.

`main()` is the entry point of `nas` and `python -m nas`. Errors end at one boundary,
`ErrorBoundary`, the class of the top-level command group: commands raise, they never exit on
their own for an error, and every error prints as one `error: ...` line with the exit code below.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Optional

import click
import typer
from rich.text import Text
from typer.core import TyperGroup

from .arch import Arch, ArchError
from .config import BUDGETS, load_config
from .console import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_TERMINATED, err, fail, out
from .errors import ConfigError, NasRuntimeError
from .signals import Terminated, sigterm_as_interrupt
from .teacher_cli import teacher_app

HELP = f"""Hardware-aware architecture search for on-device depth estimation.

Exit codes:
{EXIT_FAILED}: a failure during work (training, caching, export), or a check that found problems
{EXIT_BAD_INPUT}: bad input, found before work starts (arguments, config, space, hardware, data, model files)
{EXIT_INTERRUPTED}: interrupted (Ctrl-C)
{EXIT_TERMINATED}: stopped by SIGTERM (`nas run`: like Ctrl-C, the running trial is marked failed)"""

# What to do after Ctrl-C, per top-level command where there is more to say than "interrupted".
INTERRUPT_HINTS = {"run": "the running trial is marked failed; run the same command again to resume",
                   "proxy-check": "finished re-trainings are kept in the study; run the same command again "
                                  "to resume"}


class ErrorBoundary(TyperGroup):
    """The CLI's one error boundary: an error raised by any command ends here as one line and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            for problem in getattr(exc, "problems", ()):  # a data set check: every bad file, then the summary
                err.print(str(problem), highlight=False, soft_wrap=True)
            fail(str(exc), EXIT_BAD_INPUT)
        except NasRuntimeError as exc:
            fail(str(exc), EXIT_FAILED)
        except KeyboardInterrupt as exc:
            hint = INTERRUPT_HINTS.get(ctx.invoked_subcommand or "")
            what = f"terminated ({exc.signal_name})" if isinstance(exc, Terminated) else "interrupted"
            err.print(f"{what}: {hint}" if hint else what)
            raise typer.Exit(EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED) from None


app = typer.Typer(cls=ErrorBoundary, help=HELP, no_args_is_help=True, pretty_exceptions_enable=False)
data_app = typer.Typer(help="Create and check data sets in the MAI 2021 layout.", no_args_is_help=True)
arch_app = typer.Typer(help="Seed architectures and arch JSON: list, show, export.", no_args_is_help=True)
devices_app = typer.Typer(help="Target devices (hardware profiles).", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(arch_app, name="arch")
app.add_typer(devices_app, name="devices")
app.add_typer(teacher_app, name="teacher")

BudgetOption = Annotated[Optional[str], typer.Option(
    "--budget", help=f"{' | '.join(BUDGETS)}: training steps, resolution, data subset")]
StudyName = Annotated[Optional[str], typer.Option("--study", help="study name")]
Storage = Annotated[Optional[str], typer.Option(help="Optuna storage URL (default sqlite:///RESULTS/nas.db)")]
ConfigFile = Annotated[Optional[Path], typer.Option("--config", help="YAML config file (keys as the flags)")]
Results = Annotated[Optional[Path], typer.Option(help="output folder (default results/)")]
Artifacts = Annotated[Optional[str], typer.Option(help="artifact store: a folder or s3://BUCKET "
                                                       "(default RESULTS/artifacts)")]
Pretrained = Annotated[Optional[str], typer.Option(
    help="encoder starting weights: auto (ImageNet where the Hugging Face cache has them, else random) | none | "
         "imagenet (download if needed) | FOLDER with <backbone>.safetensors or .pth per backbone")]


@data_app.command("synth")
def data_synth(out_dir: Annotated[Path, typer.Option("--out", help="folder to write")],
               train: int = 160, val: int = 16, test: int = 16, seed: int = 0,
               width: int = 640, height: int = 480) -> None:
    """Write a synthetic depth data set (rendered rooms and streets) in the MAI 2021 layout."""
    from rich.progress import Progress

    from .data.synth import synthesize

    with Progress(console=err, transient=True) as progress:
        task = progress.add_task("rendering scenes", total=train + val + test)
        synthesize(out_dir, {"train": train, "validation": val, "test": test}, seed=seed, width=width, height=height,
                   workers=os.cpu_count() or 1, progress=lambda done, total: progress.update(task, completed=done))
    out.print(f"wrote {train} train, {val} validation, {test} test pairs to {out_dir}")


@data_app.command("check")
def data_check(root: Annotated[Path, typer.Argument(help="data set root")]) -> None:
    """Check a data set; exit 1 and name every bad file and what is wrong with it."""
    from .data.check import check_dataset

    problems = check_dataset(root)
    for problem in problems:
        out.print(str(problem), highlight=False, soft_wrap=True)
    if problems:
        err.print(Text.assemble((f"{len(problems)} problem(s)", "red"), f" in {root}"))
        raise typer.Exit(EXIT_FAILED)
    out.print(f"{root}: OK")


@app.command("run")
def run(config_file: ConfigFile = None,
        data: Annotated[Optional[Path], typer.Option(help="data set root (default: synthetic data)")] = None,
        space: Annotated[Optional[Path], typer.Option(help="search-space YAML")] = None,
        hardware: Annotated[Optional[Path], typer.Option(help="hardware profile YAML")] = None,
        study: StudyName = None, storage: Storage = None,
        trials: Annotated[Optional[int], typer.Option(help="trained trials the study should reach: complete or pruned "
                                                      "while training (failed ones are retried; candidates screened "
                                                      "out by the latency bound do not count)")] = None,
        timeout: Annotated[Optional[float], typer.Option(help="stop starting trials after SECONDS")] = None,
        budget: BudgetOption = None,
        teacher: Annotated[Optional[Path], typer.Option(help="teacher folder (default: trained under results/)")] = None,
        no_distill: Annotated[bool, typer.Option("--no-distill", help="train without a teacher")] = False,
        objective: Annotated[Optional[str], typer.Option(help="score | pareto (si-RMSE and latency)")] = None,
        pruner: Annotated[Optional[str], typer.Option(help="none | median | hyperband (on estimated Final Scores)")] = None,
        sampler: Annotated[Optional[str], typer.Option(help="tpe | random")] = None,
        seed: Optional[int] = None, results: Results = None, artifacts: Artifacts = None,
        enqueue_baselines: Annotated[bool, typer.Option("--enqueue-baselines",
                                                        help="start from every seed preset in every precision "
                                                             "(same as --baselines all)")] = False,
        baselines: Annotated[Optional[str], typer.Option(
            help="seed presets to start from: all | none | comma-separated names (default: litedepth)")] = None,
        trust_new_host_keys: Annotated[bool, typer.Option("--trust-new-host-keys",
                                                          help="accept and save unknown SSH host keys")] = False,
        pretrained: Pretrained = None,
        max_si_rmse: Annotated[Optional[float], typer.Option(
            help="accuracy floor: trials with a higher TFLite si-RMSE are infeasible (never the best); set when the "
                 "study is created")] = None) -> None:
    """Create or resume a study and run trials (the embedded default needs no arguments)."""
    from .search import run_search, standing_line, summary_table

    config = load_config(config_file, data=data, space=space, hardware=hardware, study=study, storage=storage,
                         trials=trials, timeout=timeout, budget=budget, teacher=teacher,
                         distill=False if no_distill else None, objective=objective, pruner=pruner, sampler=sampler, seed=seed,
                         results=results, artifacts=artifacts, baselines="all" if enqueue_baselines else _baselines(baselines),
                         trust_new_host_keys=trust_new_host_keys or None, pretrained=pretrained,
                         max_si_rmse=max_si_rmse)
    started = datetime.now()  # Optuna stamps trials with naive local time too
    with sigterm_as_interrupt():  # a stopped worker fails its trial with a reason, as on Ctrl-C
        study_obj = run_search(config)
    out.print(summary_table(study_obj))  # whole in a log file too: nas.console widens non-terminal output
    if line := standing_line(study_obj):
        out.print(line, highlight=False, markup=False)
    location = config.artifacts_location
    browse = (f"browse: nas dashboard --storage {config.storage_shown} --results {config.results}"
              + (f" --artifacts {location}\n" if config.artifacts else "\n"))
    if not location.startswith("s3://"):  # optuna-dashboard's own command line reads artifacts from a folder only
        browse += f"   or: optuna-dashboard {config.storage_shown} --artifact-dir {location}\n"
    out.print(f"{browse}"
              f"ship the best: nas finalize --study {config.study} --storage {config.storage_shown}", highlight=False)
    if reason := run_failure(study_obj, started):
        raise NasRuntimeError(None, reason)


def run_failure(study: Any, since: datetime) -> str | None:
    """Why `nas run` failed when every trial it started failed (so scripts see exit 1), else None."""
    import optuna

    mine = [t for t in study.get_trials(deepcopy=False)
            if t.datetime_start is not None and t.datetime_start >= since]
    if not mine or any(t.state != optuna.trial.TrialState.FAIL for t in mine):
        return None
    last = mine[-1].user_attrs.get("fail_reason", "no reason recorded")
    return f"all {len(mine)} trial(s) of this run failed; last: {last}"


@app.command("finalize")
def finalize_cmd(config_file: ConfigFile = None, study: StudyName = None, storage: Storage = None,
                 trial: Annotated[Optional[int], typer.Option(help="trial number (default: best)")] = None,
                 budget: BudgetOption = "full", data: Optional[Path] = None, hardware: Optional[Path] = None,
                 no_distill: Annotated[bool, typer.Option("--no-distill")] = False,
                 results: Results = None,
                 out_dir: Annotated[Optional[Path], typer.Option("--out", help="release folder")] = None,
                 pretrained: Pretrained = None) -> None:
    """Train the best architecture fully; write its .tflite, .onnx, metrics.json, report.html and report.md."""
    from .finalize import finalize

    config = load_config(config_file, study=study, storage=storage, budget=budget, data=data, hardware=hardware,
                         results=results, distill=False if no_distill else None, pretrained=pretrained)
    folder = finalize(config, trial, out_dir)
    out.print(f"shipped: {folder / 'model.tflite'}\nreport: {folder / 'report.html'}")


@app.command("proxy-check")
def proxy_check_cmd(trials: Annotated[int, typer.Option(help="K, complete trials to re-train (at least 3): the "
                                                        "top ceil(K/2) by Final Score and the rest spread evenly "
                                                        "through the ranking")],
                    config_file: ConfigFile = None, study: StudyName = None, storage: Storage = None,
                    budget: BudgetOption = "full",
                    seed: Annotated[Optional[int], typer.Option(
                        help="trial N re-trains with seed SEED + N, as the search trained it (default 0); also "
                             "seeds the bootstrap")] = None,
                    data: Optional[Path] = None,
                    hardware: Optional[Path] = None,
                    no_distill: Annotated[bool, typer.Option("--no-distill")] = False, results: Results = None,
                    out_file: Annotated[Optional[Path], typer.Option(
                        "--out", help="JSON file (default RESULTS/proxy_check/STUDY.json)")] = None,
                    pretrained: Pretrained = None) -> None:
    """Re-train K trials at a longer budget and measure how their ranking agrees with the search's
    (Kendall tau with its interval, Spearman rho); resumable, stored in the study and a JSON file."""
    from .proxy_check import default_out, proxy_check, summary_lines

    config = load_config(config_file, study=study, storage=storage, budget=budget, seed=seed, data=data,
                         hardware=hardware, results=results, distill=False if no_distill else None,
                         pretrained=pretrained)
    summary = proxy_check(config, trials, BUDGETS[config.budget], out_file)
    for line in summary_lines(summary):
        out.print(line, highlight=False, markup=False, soft_wrap=True)
    out.print(f"written: {out_file or default_out(config)} and the study attribute proxy_check", highlight=False,
              markup=False, soft_wrap=True)


def _baselines(text: str | None) -> list[str] | str | None:
    """`--baselines` as the config value: all, none, or a list of preset names."""
    if text is None or text in ("all", "none"):
        return text
    return [name.strip() for name in text.split(",") if name.strip()]


def _resolve_arch(name_or_json: str) -> Arch:
    """A preset, arch JSON or JSON file; one that cannot be read is bad input."""
    from .presets import resolve_arch

    try:
        return resolve_arch(name_or_json)
    except ValueError as exc:  # ArchError included
        raise ConfigError(None, str(exc)) from None


@arch_app.command("list")
def arch_list() -> None:
    """The seed presets with backbone, params and MACs at 640×480."""
    from rich.table import Table

    from .models import DepthNet, count_macs, count_params
    from .presets import PRESETS

    table = Table(title="seed architectures (MACs at 640×480)")
    for column in ("name", "backbone", "scale", "params", "MMACs", "arch_id"):
        table.add_column(column)
    for name, arch in PRESETS.items():
        model = DepthNet(arch)
        table.add_row(name, arch.backbone, arch.input_scale, f"{count_params(model):,}",
                      f"{count_macs(model, 480, 640) / 1e6:,.0f}", arch.arch_id)
    out.print(table)


@arch_app.command("show")
def arch_show(name_or_json: str, as_json: Annotated[bool, typer.Option("--json")] = False,
              height: int = 480, width: int = 640) -> None:
    """The full Arch of a preset, arch JSON or JSON file, with params and MACs."""
    from .models import DepthNet, count_macs, count_params

    arch = _resolve_arch(name_or_json)
    try:
        model = DepthNet(arch)
    except ValueError as exc:  # ArchError included: an arch that cannot be built
        raise ConfigError(None, str(exc)) from None
    info = {"arch": arch.to_dict(), "arch_id": arch.arch_id, "params": count_params(model),
            "macs": count_macs(model, height, width), "resolution": [height, width]}
    if as_json:
        print(json.dumps(info, indent=2))
    else:
        out.print(info)


@arch_app.command("export")
def arch_export(name_or_json: str, out_dir: Annotated[Path, typer.Option("--out")],
                height: int = 480, width: int = 640,
                precision: Annotated[Optional[str], typer.Option(
                    help="fp32 | int8 (calibrated on rendered scenes; default: the arch's own)")] = None) -> None:
    """Export a preset or arch JSON (untrained weights) to ONNX and TFLite, with the parity report."""
    import dataclasses

    from .export.pipeline import export_arch

    arch = _resolve_arch(name_or_json)
    if precision is not None:
        try:
            arch = dataclasses.replace(arch, precision=precision)
        except ArchError as exc:
            raise ConfigError(None, str(exc)) from None
    try:
        report = export_arch(arch, out_dir, height, width, precision=arch.precision)
    except ArchError as exc:  # an arch that cannot be built: bad input
        raise ConfigError(None, str(exc)) from None
    except ValueError as exc:  # the export itself failed (ExportError reaches the boundary as it is)
        raise NasRuntimeError(None, str(exc)) from None
    out.print(report)


@devices_app.command("check")
def devices_check(file: Annotated[Path, typer.Argument(help="hardware profile or pool YAML")],
                  storage: Annotated[Optional[str], typer.Option(
                      help="study database: lease each device so a running search is not disturbed")] = None,
                  trust_new_host_keys: Annotated[bool, typer.Option("--trust-new-host-keys")] = False) -> None:
    """Connect to each device, verify it, time one small model; exit 1 if any fails."""
    from .hardware.check import check_devices

    raise typer.Exit(check_devices(file, storage_url=storage, trust_new_host_keys=trust_new_host_keys))


@app.command("dashboard")
def dashboard(storage: Storage = None, results: Results = None, artifacts: Artifacts = None, port: int = 8080,
              host: str = "127.0.0.1") -> None:
    """optuna-dashboard over the study database (default results/nas.db), with the artifact store; prints the URL."""
    from .dashboard import serve

    serve(load_config(None, storage=storage, results=results, artifacts=artifacts), host, port)


@app.command("report")
def report_cmd(study: StudyName = None, storage: Storage = None, results: Results = None, artifacts: Artifacts = None,
               out_dir: Annotated[Optional[Path], typer.Option("--out")] = None) -> None:
    """A study as report.html (Pareto front, history, importances, top trials, previews, cost) with its PNGs,
    trials.csv and summary.json."""
    from .report import write_study_report

    folder = write_study_report(load_config(None, study=study, storage=storage, results=results, artifacts=artifacts),
                                out_dir)
    out.print(f"report written to {folder}")


def main() -> None:
    """The console entry point of `nas` and `python -m nas` (nas/__main__.py)."""
    app()
