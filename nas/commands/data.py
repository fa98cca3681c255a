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
               train: Annotated[int, typer.Option(help="training pairs")] = 160,
               val: Annotated[int, typer.Option(help="validation pairs")] = 16,
               test: Annotated[int, typer.Option(help="test pairs")] = 16,
               seed: Annotated[int, typer.Option(help="scene seed: the same seed renders the same set")] = 0,
               width: Annotated[int, typer.Option(help="image width in pixels")] = 640,
               height: Annotated[int, typer.Option(help="image height in pixels")] = 480) -> None:
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
    from nas.data.layout import SPLITS, list_pairs

    problems = check_dataset(root)
    for problem in problems:
        out.print(str(problem), highlight=False, soft_wrap=True)
    if problems:
        err.print(Text.assemble((f"{len(problems)} problem(s)", "red"), f" in {root}"))
        raise typer.Exit(EXIT_FAILED)
    counts = {split: len(list_pairs(root, split)) for split in SPLITS}
    out.print(f"{root}: OK, {sum(counts.values())} pairs checked ("
              + ", ".join(f"{split} {n}" for split, n in counts.items()) + ")", highlight=False)


import_app = typer.Typer(help="Import a depth data set (NYU Depth v2, DIODE, KITTI, plain folders) into the MAI "
                              "2021 layout, checked and split; details in docs/data-import.md.",
                         no_args_is_help=True)
data_app.add_typer(import_app, name="import")

OutOption = Annotated[Path, typer.Option("--out", help="folder to create (must not exist, or be empty)")]
CropOption = Annotated[str | None, typer.Option("--crop", metavar="WxH", help="cut every frame to WxH pixels "
                                                "(width x height; KITTI: bottom centre, others: centre)")]
ResizeOption = Annotated[str | None, typer.Option("--resize", metavar="WxH", help="scale every frame (after --crop) "
                                                  "to WxH; refused if it would change the aspect ratio")]
MaxDepthOption = Annotated[float, typer.Option("--max-depth", help="metres; farther depth is written as 0 "
                                               "(unknown); at most 65.535, the uint16-millimetre limit")]
SeedOption = Annotated[int, typer.Option("--seed", help="seed of every split drawn")]


def _geometry(crop: str | None, resize: str | None, anchor: str = "center"):
    from nas.data.importers.writer import Geometry, parse_size

    return Geometry(crop=parse_size(crop, "--crop"), anchor=anchor, resize=parse_size(resize, "--resize"))


def _write(plan, out_dir: Path) -> None:
    """Write a checked plan with a transient progress bar, then print the counts and the depth range."""
    from rich.progress import Progress

    from nas.data.importers.writer import write_import

    try:
        with Progress(console=err, transient=True) as progress:
            task = progress.add_task(f"importing {plan.source}", total=len(plan.samples))
            result = write_import(plan, out_dir, say=lambda line: err.print(line, highlight=False, soft_wrap=True),
                                  progress=lambda done, total: progress.update(task, completed=done))
    except KeyboardInterrupt:
        err.print("the pairs written so far are kept; run the same command again to continue", highlight=False)
        raise
    for note in result.notes:
        err.print(f"note: {note}", highlight=False, soft_wrap=True)
    counts = ", ".join(f"{n} {split}" for split, n in result.counts.items())
    out.print(f"wrote {counts} pairs to {result.out} (data check: OK)", highlight=False, soft_wrap=True)
    if result.depth_range_m:
        low, high = result.depth_range_m
        out.print(f"depth of valid pixels: {low:.3f} .. {high:.3f} m", highlight=False)


@import_app.command("nyu")
def import_nyu(mat: Annotated[Path, typer.Argument(help="nyu_depth_v2_labeled.mat (MATLAB v7.3)")],
               out_dir: OutOption,
               splits: Annotated[Path | None, typer.Option("--splits", help="splits.mat with trainNdxs/testNdxs "
                                                           "(1-based): the official split")] = None,
               val: Annotated[int | None, typer.Option("--val", help="validation pairs carved from train "
                                                       "(default: 10% of train)")] = None,
               test: Annotated[int | None, typer.Option("--test", help="without --splits: test pairs drawn "
                                                        "(default: the official share, 654 of 1449)")] = None,
               seed: SeedOption = 0, crop: CropOption = None, resize: ResizeOption = None,
               max_depth: MaxDepthOption = 65.535) -> None:
    """NYU Depth v2's labeled set: RGB PNG and uint16 millimetre depth PNG per frame, split and checked."""
    from nas.data.importers.nyu import plan_nyu

    _write(plan_nyu(mat, splits, val=val, test=test, seed=seed, geometry=_geometry(crop, resize),
                    max_depth_m=max_depth), out_dir)


@import_app.command("diode")
def import_diode(root: Annotated[Path, typer.Argument(help="DIODE folder holding train/ and val/")],
                 out_dir: OutOption,
                 part: Annotated[str, typer.Option("--part", help="indoor, outdoor or both")] = "both",
                 test: Annotated[int, typer.Option("--test", help="test pairs carved from train (DIODE has "
                                                   "no public test depth)")] = 0,
                 seed: SeedOption = 0, crop: CropOption = None, resize: ResizeOption = None,
                 max_depth: MaxDepthOption = 65.535) -> None:
    """DIODE: train to train, val to validation; masked pixels written as 0 (unknown)."""
    from nas.data.importers.diode import plan_diode

    _write(plan_diode(root, part=part, test=test, seed=seed, geometry=_geometry(crop, resize),
                      max_depth_m=max_depth), out_dir)


@import_app.command("kitti")
def import_kitti(root: Annotated[Path, typer.Argument(help="KITTI depth annotations (data_depth_annotated) "
                                                      "holding train/ and val/")],
                 out_dir: OutOption,
                 rgb_root: Annotated[Path | None, typer.Option("--rgb-root", help="KITTI raw, holding "
                                                               "<date>/<drive>/image_02/data/")] = None,
                 camera: Annotated[str, typer.Option("--camera", help="02, 03 or both")] = "both",
                 test: Annotated[int, typer.Option("--test", help="test pairs carved from train")] = 0,
                 seed: SeedOption = 0, crop: CropOption = None, resize: ResizeOption = None,
                 max_depth: MaxDepthOption = 65.535) -> None:
    """KITTI depth completion: sparse annotations (value/256 m) with their RGB frames; --crop 1216x352 for one size."""
    from nas.data.importers.kitti import plan_kitti

    _write(plan_kitti(root, rgb_root, camera=camera, test=test, seed=seed,
                      geometry=_geometry(crop, resize, anchor="bottom"), max_depth_m=max_depth), out_dir)


@import_app.command("folder")
def import_folder(rgb: Annotated[Path, typer.Option("--rgb", help="folder of RGB images (.png, .jpg)")],
                  depth: Annotated[Path, typer.Option("--depth", help="folder of depth maps of the same stems "
                                                      "(.png, .npy, .tif)")],
                  depth_unit: Annotated[str, typer.Option("--depth-unit", help="mm, cm or m: the unit of a depth "
                                                          "value times --depth-scale")],
                  out_dir: OutOption,
                  depth_scale: Annotated[float, typer.Option("--depth-scale", help="factor applied to every raw "
                                                             "depth value first (e.g. 0.00390625 for value/256)")] = 1.0,
                  val_fraction: Annotated[float, typer.Option("--val-fraction", help="share of the pairs for validation")] = 0.1,
                  test_fraction: Annotated[float, typer.Option("--test-fraction", help="share of the pairs for test")] = 0.1,
                  seed: SeedOption = 0, crop: CropOption = None, resize: ResizeOption = None,
                  max_depth: MaxDepthOption = 65.535) -> None:
    """Your own pairs: RGB and depth files matched by stem, split by seeded fractions."""
    from nas.data.importers.folder import plan_folder

    _write(plan_folder(rgb, depth, depth_unit, depth_scale=depth_scale, val_fraction=val_fraction,
                       test_fraction=test_fraction, seed=seed, geometry=_geometry(crop, resize),
                       max_depth_m=max_depth), out_dir)
