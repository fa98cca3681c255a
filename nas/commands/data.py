"""`nas data synth | check`: make and check data sets in the MAI 2021 layout."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

import os

from nas.infra.console import EXIT_FAILED, err, out

data_app = typer.Typer(help="Create and check data sets in the MAI 2021 layout.", no_args_is_help=True)


@data_app.command("synth")
def data_synth(out_dir: Annotated[Path, typer.Option("--out", help="folder to write")],
               train: int = 160, val: int = 16, test: int = 16, seed: int = 0,
               width: int = 640, height: int = 480) -> None:
    """Write a synthetic depth data set (rendered rooms and streets) in the MAI 2021 layout."""
    from rich.progress import Progress

    from nas.data.synth import synthesize

    with Progress(console=err, transient=True) as progress:
        task = progress.add_task("rendering scenes", total=train + val + test)
        synthesize(out_dir, {"train": train, "validation": val, "test": test}, seed=seed, width=width, height=height,
                   workers=os.cpu_count() or 1, progress=lambda done, total: progress.update(task, completed=done))
    out.print(f"wrote {train} train, {val} validation, {test} test pairs to {out_dir}")


@data_app.command("check")
def data_check(root: Annotated[Path, typer.Argument(help="data set root")]) -> None:
    """Check a data set; exit 1 and name every bad file and what is wrong with it."""
    from nas.data.check import check_dataset

    problems = check_dataset(root)
    for problem in problems:
        out.print(str(problem), highlight=False, soft_wrap=True)
    if problems:
        err.print(Text.assemble((f"{len(problems)} problem(s)", "red"), f" in {root}"))
        raise typer.Exit(EXIT_FAILED)
    out.print(f"{root}: OK")
