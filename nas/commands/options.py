"""Command-line options several commands share, with one help text each."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from nas.config import BUDGETS

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
Data = Annotated[Optional[Path], typer.Option(help="data set root in the MAI 2021 layout (default: the synthetic set "
                                                   "under RESULTS/data)")]
Hardware = Annotated[Optional[Path], typer.Option(help="hardware profile or device pool YAML (default "
                                                       "hardware/local.yaml: this machine)")]
SustainedS = Annotated[Optional[float], typer.Option(
    "--sustained-s", metavar="SECONDS",
    help="sustained load the model is timed under (invoked without pause: latency and temperature over time); "
         "default 60 on a device (kind: ssh), 10 on this machine (kind: local)")]
# Flags show no "<bool>" placeholder: they take no value.
NoDistill = Annotated[bool, typer.Option("--no-distill", metavar="", help="train without a teacher (no "
                                                                          "distillation loss)")]
TrustNewHostKeys = Annotated[bool, typer.Option("--trust-new-host-keys", metavar="",
                                                help="accept and save an unknown SSH host key (a changed key is "
                                                     "always refused)")]
