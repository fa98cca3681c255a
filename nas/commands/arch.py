"""`nas arch list | show | export`: the seed architectures and arch JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

import json

from nas.arch import Arch, ArchError
from nas.errors import ConfigError, NasRuntimeError
from nas.infra.console import out

arch_app = typer.Typer(help="Seed architectures and arch JSON: list, show, export.", no_args_is_help=True)


def _resolve_arch(name_or_json: str) -> Arch:
    """A preset, arch JSON or JSON file; one that cannot be read is bad input (ConfigError naming the file)."""
    from nas.presets import resolve_arch

    return resolve_arch(name_or_json)


@arch_app.command("list")
def arch_list() -> None:
    """The seed presets with backbone, params and MACs at 640×480."""
    from rich.table import Table

    from nas.models import DepthNet, count_macs, count_params
    from nas.presets import PRESETS

    table = Table(title="seed architectures (MACs at 640×480)")
    for column in ("name", "backbone", "scale", "params", "MMACs", "arch_id"):
        table.add_column(column)
    for name, arch in PRESETS.items():
        model = DepthNet(arch)
        table.add_row(name, arch.backbone, arch.input_scale, f"{count_params(model):,}",
                      f"{count_macs(model, 480, 640) / 1e6:,.0f}", arch.arch_id)
    out.print(table)


@arch_app.command("show")
def arch_show(name_or_json: str, as_json: Annotated[bool, typer.Option("--json", metavar="", help="print JSON instead of YAML")] = False,
              height: Annotated[int, typer.Option(help="input height in pixels")] = 480,
              width: Annotated[int, typer.Option(help="input width in pixels")] = 640) -> None:
    """The full Arch of a preset, arch JSON or JSON file, with params and MACs."""
    from nas.models import DepthNet, count_macs, count_params

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
        import yaml

        print(yaml.safe_dump(info, sort_keys=False, allow_unicode=True), end="")


@arch_app.command("export")
def arch_export(name_or_json: str,
                out_dir: Annotated[Path, typer.Option("--out", help="folder for model.onnx, model.tflite and the parity report")],
                height: Annotated[int, typer.Option(help="input height in pixels")] = 480,
                width: Annotated[int, typer.Option(help="input width in pixels")] = 640,
                precision: Annotated[Optional[str], typer.Option(
                    help="fp32 | int8 (calibrated on rendered scenes; default: the arch's own)")] = None,
                drift_margin: Annotated[float, typer.Option(
                    "--int8-drift-margin",
                    help="int8: when its si-RMSE is worse than the float32 twin's by more than this, print the "
                         "layers where the error grows and the si-RMSE by calibration-set size (int8_drift.json); "
                         "between 0 and 1")] = 0.01) -> None:
    """Export a preset or arch JSON (untrained weights) to ONNX and TFLite, with the parity report."""
    import dataclasses

    from nas.export.pipeline import export_arch

    if not 0 < drift_margin < 1:  # before any work: an export takes minutes
        raise ConfigError(None, f"--int8-drift-margin: must be more than 0 and less than 1, got {drift_margin:g}")
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
    if arch.precision == "int8":
        _print_int8_drift(report, out_dir, height, width, drift_margin)


def _print_int8_drift(report: dict, out_dir: Path, height: int, width: int, margin: float) -> None:
    """Where the int8 model loses accuracy, when it loses more than `margin` (nas/export/int8_drift.py)."""
    from nas.export import int8_drift

    out.print(f"checking int8 drift against the float32 twin (margin {margin:g}; over it, the model is quantized "
              f"again on {'/'.join(map(str, int8_drift.CALIBRATION_SIZES))} scenes)")
    drift = int8_drift.export_drift(report, height, width, margin=margin)  # ExportError reaches the boundary
    if drift is None:
        out.print("int8 drift: within the margin")
        return
    path = out_dir / "int8_drift.json"
    path.write_text(json.dumps(drift, indent=2))
    out.print(int8_drift.format_drift(drift), highlight=False)
    out.print(f"full table: {path}")
