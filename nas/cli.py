"""The `nas` command: parse, load config, call one function. No logic lives here."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from .console import err, fail, out
from .errors import ConfigError
from .teacher_cli import teacher_app

app = typer.Typer(help="Hardware-aware architecture search for on-device depth estimation.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
data_app = typer.Typer(help="Create and check data sets in the MAI 2021 layout.", no_args_is_help=True)
arch_app = typer.Typer(help="Seed architectures and arch JSON: list, show, export.", no_args_is_help=True)
devices_app = typer.Typer(help="Target devices (hardware profiles).", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(arch_app, name="arch")
app.add_typer(devices_app, name="devices")
app.add_typer(teacher_app, name="teacher")

Budget = Annotated[Optional[str], typer.Option(help="smoke | quick | full: training steps, resolution, data subset")]
StudyName = Annotated[Optional[str], typer.Option("--study", help="study name")]
Storage = Annotated[Optional[str], typer.Option(help="Optuna storage URL (default sqlite:///RESULTS/nas.db)")]
ConfigFile = Annotated[Optional[Path], typer.Option("--config", help="YAML config file (keys as the flags)")]
Results = Annotated[Optional[Path], typer.Option(help="output folder (default results/)")]


def load(config_file: Optional[Path], **flags):
    from .config import load_config

    try:
        return load_config(config_file, **flags)
    except ConfigError as exc:
        fail(str(exc))


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
                   progress=lambda done, total: progress.update(task, completed=done))
    out.print(f"wrote {train} train, {val} validation, {test} test pairs to {out_dir}")


@data_app.command("check")
def data_check(root: Annotated[Path, typer.Argument(help="data set root")]) -> None:
    """Check a data set; exit 1 and name every bad file and what is wrong with it."""
    from .data.check import check_dataset

    problems = check_dataset(root)
    for problem in problems:
        out.print(str(problem), highlight=False)
    if problems:
        err.print(f"[red]{len(problems)} problem(s)[/red] in {root}")
        raise typer.Exit(1)
    out.print(f"{root}: OK")


@app.command("run")
def run(config_file: ConfigFile = None,
        data: Annotated[Optional[Path], typer.Option(help="data set root (default: synthetic data)")] = None,
        space: Annotated[Optional[Path], typer.Option(help="search-space YAML")] = None,
        hardware: Annotated[Optional[Path], typer.Option(help="hardware profile YAML")] = None,
        study: StudyName = None, storage: Storage = None,
        trials: Annotated[Optional[int], typer.Option(help="complete or pruned trials the study should reach (failed ones are retried)")] = None,
        timeout: Annotated[Optional[float], typer.Option(help="stop starting trials after SECONDS")] = None,
        budget: Budget = None,
        teacher: Annotated[Optional[Path], typer.Option(help="teacher folder (default: trained under results/)")] = None,
        no_distill: Annotated[bool, typer.Option("--no-distill", help="train without a teacher")] = False,
        objective: Annotated[Optional[str], typer.Option(help="score | pareto (si-RMSE and latency)")] = None,
        pruner: Annotated[Optional[str], typer.Option(help="none | median | hyperband")] = None,
        seed: Optional[int] = None, results: Results = None,
        enqueue_baselines: Annotated[bool, typer.Option("--enqueue-baselines",
                                                        help="run the MAI 2021 seed architectures first")] = False,
        trust_new_host_keys: Annotated[bool, typer.Option("--trust-new-host-keys",
                                                          help="accept and save unknown SSH host keys")] = False) -> None:
    """Create or resume a study and run trials (the embedded default needs no arguments)."""
    from .search import DataError, run_search, summary_table

    config = load(config_file, data=data, space=space, hardware=hardware, study=study, storage=storage,
                  trials=trials, timeout=timeout, budget=budget, teacher=teacher, distill=False if no_distill else None,
                  objective=objective, pruner=pruner, seed=seed, results=results,
                  enqueue_baselines=enqueue_baselines or None, trust_new_host_keys=trust_new_host_keys or None)
    try:
        study_obj = run_search(config)
    except DataError as exc:
        for problem in exc.problems:
            err.print(str(problem), highlight=False)
        fail(str(exc))
    except ConfigError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        err.print("interrupted: the running trial is marked failed; run the same command again to resume")
        raise typer.Exit(130)
    out.print(summary_table(study_obj))
    artifacts = config.artifact_dir
    out.print(f"browse: nas dashboard --storage {config.storage_url} --results {config.results}\n"
              f"   or: optuna-dashboard {config.storage_url} --artifact-dir {artifacts}\n"
              f"ship the best: nas finalize --study {config.study} --storage {config.storage_url}", highlight=False)


@app.command("finalize")
def finalize_cmd(config_file: ConfigFile = None, study: StudyName = None, storage: Storage = None,
                 trial: Annotated[Optional[int], typer.Option(help="trial number (default: best)")] = None,
                 budget: Budget = "full", data: Optional[Path] = None, hardware: Optional[Path] = None,
                 no_distill: Annotated[bool, typer.Option("--no-distill")] = False,
                 results: Results = None,
                 out_dir: Annotated[Optional[Path], typer.Option("--out", help="release folder")] = None) -> None:
    """Train the best architecture fully; write its .tflite, .onnx, metrics.json and report.md."""
    from .finalize import finalize

    config = load(config_file, study=study, storage=storage, budget=budget, data=data, hardware=hardware,
                  results=results, distill=False if no_distill else None)
    try:
        folder = finalize(config, trial, out_dir)
    except ConfigError as exc:
        fail(str(exc))
    out.print(f"shipped: {folder / 'model.tflite'}\nreport: {folder / 'report.md'}")


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
    from .arch import ArchError
    from .models import DepthNet, count_macs, count_params
    from .presets import resolve_arch

    try:
        arch = resolve_arch(name_or_json)
        model = DepthNet(arch)
    except (ArchError, ValueError) as exc:
        fail(str(exc))
    info = {"arch": arch.to_dict(), "arch_id": arch.arch_id, "params": count_params(model),
            "macs": count_macs(model, height, width), "resolution": [height, width]}
    if as_json:
        print(json.dumps(info, indent=2))
    else:
        out.print(info)


@arch_app.command("export")
def arch_export(name_or_json: str, out_dir: Annotated[Path, typer.Option("--out")],
                height: int = 480, width: int = 640) -> None:
    """Export a preset or arch JSON (untrained weights) to ONNX and float32 TFLite, with the parity report."""
    from .arch import ArchError
    from .export import ExportError
    from .export.pipeline import export_arch
    from .presets import resolve_arch

    try:
        report = export_arch(resolve_arch(name_or_json), out_dir, height, width)
    except (ArchError, ValueError, ExportError) as exc:
        fail(str(exc), 1)
    out.print(report)


@devices_app.command("check")
def devices_check(file: Annotated[Path, typer.Argument(help="hardware profile or pool YAML")],
                  storage: Annotated[Optional[str], typer.Option(
                      help="study database: lease each device so a running search is not disturbed")] = None,
                  trust_new_host_keys: Annotated[bool, typer.Option("--trust-new-host-keys")] = False) -> None:
    """Connect to each device, verify it, time one small model; exit 1 if any fails."""
    from .hardware.check import check_devices

    try:
        code = check_devices(file, storage_url=storage, trust_new_host_keys=trust_new_host_keys)
    except ConfigError as exc:
        fail(str(exc))
    raise typer.Exit(code)


@app.command("dashboard")
def dashboard(storage: Storage = None, results: Results = None, port: int = 8080, host: str = "127.0.0.1") -> None:
    """optuna-dashboard over the study database, with the artifact store (models, previews)."""
    from .dashboard import serve

    config = load(None, storage=storage, results=results)
    serve(config, host, port)


@app.command("report")
def report_cmd(study: StudyName = None, storage: Storage = None, results: Results = None,
               out_dir: Annotated[Optional[Path], typer.Option("--out")] = None) -> None:
    """Tables and plots of a study: trials CSV, latency vs si-RMSE with the Pareto front, summary."""
    from .report import write_study_report

    config = load(None, study=study, storage=storage, results=results)
    try:
        folder = write_study_report(config, out_dir)
    except ConfigError as exc:
        fail(str(exc))
    out.print(f"report written to {folder}")


def main() -> None:  # pragma: no cover - console entry for `python -m nas`
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
