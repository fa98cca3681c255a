"""`nas finalize`: train the best (or a named) trial fully and ship its `.tflite` with a report. The release
itself is `release.py`, imported when the command runs so that `nas --help` stays fast."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from nas.commands.options import (BudgetOption, ConfigFile, Data, Hardware, NoDistill, Pretrained, Results, Storage,
                                  StudyName, SustainedS)
from nas.config import load_config
from nas.infra.console import out
from nas.infra.third_party import route_to_log

def finalize_cmd(config_file: ConfigFile = None, study: StudyName = None, storage: Storage = None,
                 trial: Annotated[Optional[int], typer.Option(help="trial number (default: best)")] = None,
                 budget: BudgetOption = "full", data: Data = None, hardware: Hardware = None,
                 no_distill: NoDistill = False,
                 results: Results = None,
                 out_dir: Annotated[Optional[Path], typer.Option("--out", help="release folder")] = None,
                 pretrained: Pretrained = None, sustained_s: SustainedS = None) -> None:
    """Train the best architecture fully; write its .tflite, .onnx, metrics.json, report.html and report.md."""
    from nas.commands.finalize.release import finalize

    config = load_config(config_file, study=study, storage=storage, budget=budget, data=data, hardware=hardware,
                         results=results, distill=False if no_distill else None, pretrained=pretrained,
                         sustained_s=sustained_s)
    route_to_log(config.results / "logs", "finalize")
    folder = finalize(config, trial, out_dir)
    out.print(f"shipped: {folder / 'model.tflite'}\nreport: {folder / 'report.html'}")
