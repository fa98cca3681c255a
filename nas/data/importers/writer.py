"""What every importer shares: the plan it hands over, and the one writer that turns a plan into a data set.

An importer only reads: it checks its source and lists `Sample`s (a stem, a split, the stored size and a
function that reads the pixels) in an `ImportPlan`, raising ConfigError before anything is written. The
writer then does the rest the same way for every source, so that every import is safe in the same way:

- it writes into a hidden sibling of `--out` (`.NAME.importing`) and renames it into place only after the
  data check passed, so `--out` never holds half a data set;
- that folder keeps a progress manifest (`.progress.jsonl`: a header with the plan's fingerprint, then one
  line per finished pair), so a rerun of the same command after an interruption skips what is done; a
  different command (another source or other options) discards the partial folder and starts over;
- every PNG is written through a temporary name (`atomic_path`), so a pair's files exist only when whole;
- depth in metres becomes uint16 millimetres, with every invalid value (0, negative, NaN, inf, beyond the
  maximum range) written as 0, the layout's "unknown";
- it crops and resizes only when asked and never changes the aspect ratio.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from nas.data.check import check_dataset
from nas.data.layout import SPLITS
from nas.errors import ConfigError, NasRuntimeError
from nas.infra.files import atomic_path, atomic_write_text

# The largest depth uint16 millimetres can hold; anything farther is written as 0 (unknown).
MAX_DEPTH_M = 65.535
PROGRESS = ".progress.jsonl"
MANIFEST = "import.json"

# rgb uint8 (H, W, 3) and depth in metres (H, W), where non-finite, <= 0 or too far means unknown.
Reader = Callable[[], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Sample:
    """One RGB/depth pair of the source: where it goes and how to read it (lazily, inside the write loop)."""

    stem: str
    split: str
    size: tuple[int, int]  # (W, H) as stored in the source, known from headers before any pixel is read
    origin: Path  # the file an error about this pair names
    read: Reader


@dataclass(frozen=True)
class Geometry:
    """The crop (anchored at the bottom centre or the centre) and resize asked for; none: pixels as stored."""

    crop: tuple[int, int] | None = None
    anchor: Literal["center", "bottom"] = "center"
    resize: tuple[int, int] | None = None

    def describe(self) -> str | None:
        parts = []
        if self.crop:
            where = "bottom centre" if self.anchor == "bottom" else "centre"
            parts.append(f"cropped to {self.crop[0]}×{self.crop[1]} (at the {where})")
        if self.resize:
            parts.append(f"resized to {self.resize[0]}×{self.resize[1]}")
        return ", then ".join(parts) or None

    def output_size(self, size: tuple[int, int]) -> tuple[int, int]:
        return self.resize or self.crop or size

    def apply(self, rgb: np.ndarray, depth_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Crop, then resize: RGB bilinearly, depth by nearest neighbour so that 0 (unknown) never blends in."""
        if self.crop:
            width, height = self.crop
            rows, cols = depth_mm.shape
            top = rows - height if self.anchor == "bottom" else (rows - height) // 2
            left = (cols - width) // 2
            rgb, depth_mm = rgb[top:top + height, left:left + width], depth_mm[top:top + height, left:left + width]
        if self.resize and self.resize != (depth_mm.shape[1], depth_mm.shape[0]):
            rgb = np.asarray(Image.fromarray(rgb, "RGB").resize(self.resize, Image.BILINEAR))
            depth_mm = np.asarray(Image.fromarray(depth_mm).resize(self.resize, Image.NEAREST)).astype(np.uint16)
        return np.ascontiguousarray(rgb), np.ascontiguousarray(depth_mm)


@dataclass
class ImportPlan:
    """Everything an import will write, checked: the samples, and what `import.json` records of the source."""

    source: str  # nyu | diode | kitti | folder
    samples: list[Sample]
    inputs: dict[str, Any]  # the files or folders read, each with its sha256 or listing hash
    options: dict[str, Any]
    geometry: Geometry = field(default_factory=Geometry)
    max_depth_m: float = MAX_DEPTH_M
    notes: list[str] = field(default_factory=list)  # what the user should know (pairs left out, say)

    def fingerprint(self) -> str:
        """Identifies the command's result: a partial folder with another fingerprint is not resumed."""
        text = json.dumps({"source": self.source, "inputs": self.inputs, "options": self.options,
                           "geometry": [self.geometry.crop, self.geometry.anchor, self.geometry.resize],
                           "max_depth_m": self.max_depth_m,
                           "samples": [(s.split, s.stem) for s in self.samples]}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class ImportResult:
    """What the import wrote, for the closing summary."""

    out: Path
    counts: dict[str, int]
    depth_range_m: tuple[float, float] | None
    skipped: list[str]
    resumed: int  # pairs found already written by an interrupted run
    notes: list[str]


# ---------------------------------------------------------------------------------------------- helpers

def parse_size(text: str | None, option: str) -> tuple[int, int] | None:
    """`WxH` (also `W×H`) as (W, H); ConfigError naming the option otherwise."""
    if text is None:
        return None
    parts = text.lower().replace("×", "x").split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise ConfigError(None, f"{option} {text!r}: expected WIDTHxHEIGHT in pixels, e.g. 1216x352")
    return int(parts[0]), int(parts[1])


def metres_to_mm(depth_m: np.ndarray, max_depth_m: float = MAX_DEPTH_M) -> np.ndarray:
    """uint16 millimetres; non-finite, non-positive and beyond-range values become 0 (unknown)."""
    depth = np.asarray(depth_m, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(depth) & (depth > 0) & (depth <= max_depth_m)
    mm = np.zeros(depth.shape, dtype=np.uint16)
    mm[valid] = np.minimum(np.rint(depth[valid] * 1000.0), 65535).astype(np.uint16)
    return mm


def sha256_listing(root: Path, files: list[Path]) -> str:
    """Hash of a folder's listing: relative path and size of every file read (not their bytes: folders of
    tens of thousands of frames would take minutes to hash), enough to tell another or a changed set."""
    lines = sorted(f"{p.relative_to(root).as_posix()}|{p.stat().st_size}\n" for p in files)
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def seeded_order(stems: list[str], seed: int) -> list[str]:
    """`stems` in a pseudo-random order that depends only on the seed and the set of stems."""
    ordered = sorted(stems)
    return [ordered[i] for i in np.random.default_rng(seed).permutation(len(ordered))]


def carve(stems: list[str], counts: dict[str, int], seed: int, rest: str) -> dict[str, str]:
    """Split name per stem: the first `counts[split]` of the seeded order go to each split, the rest to `rest`."""
    assigned, order = {}, seeded_order(stems, seed)
    start = 0
    for split, n in counts.items():
        for stem in order[start:start + n]:
            assigned[stem] = split
        start += n
    for stem in order[start:]:
        assigned[stem] = rest
    return assigned


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image, from its header; an unreadable file is bad input naming it."""
    try:
        with Image.open(path) as im:
            return im.size
    except OSError as exc:
        raise ConfigError(path, f"unreadable image ({exc})") from exc


def carve_test(samples: list[Sample], test: int, seed: int, root: Path) -> list[Sample]:
    """`test` of the training samples moved to the test split, seeded: for sources whose own test depth is not
    public (DIODE, KITTI)."""
    if not test:
        return samples
    train = [s.stem for s in samples if s.split == "train"]
    if not 0 < test < len(train):
        raise ConfigError(root, f"--test {test} must leave at least one of the {len(train)} training pair(s)")
    chosen = {s for s, v in carve(train, {"test": test}, seed, rest="train").items() if v == "test"}
    return [Sample(s.stem, "test", s.size, s.origin, s.read) if s.stem in chosen else s for s in samples]


def fraction_counts(total: int, val_fraction: float, test_fraction: float, origin: Path | str) -> tuple[int, int]:
    """(validation, test) sizes for fractions of `total`; at least one validation and one training pair."""
    for name, value in (("--val-fraction", val_fraction), ("--test-fraction", test_fraction)):
        if not 0 <= value < 1:
            raise ConfigError(None, f"{name} {value}: expected a fraction in [0, 1)")
    n_val = max(1, round(total * val_fraction))
    n_test = round(total * test_fraction)
    if total - n_val - n_test < 1:
        raise ConfigError(origin, f"{total} pair(s) leave no training pair with {n_val} for validation and "
                                  f"{n_test} for test; lower --val-fraction/--test-fraction or add pairs")
    return n_val, n_test


# ------------------------------------------------------------------------------------------------ checks

def _check_plan(plan: ImportPlan, out: Path) -> None:
    """ConfigError for a plan that cannot give a usable data set, or an `--out` that is taken; before any write."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(out, "output folder exists and is not empty; choose another --out or remove it")
    if not 0 < plan.max_depth_m <= MAX_DEPTH_M:
        raise ConfigError(None, f"--max-depth {plan.max_depth_m}: expected metres in (0, {MAX_DEPTH_M}], "
                                "the range of uint16 millimetres")
    if not plan.samples:
        raise ConfigError(None, "the source holds no RGB/depth pair to import")
    first: dict[str, Sample] = {}
    for sample in plan.samples:
        if sample.split not in SPLITS:
            raise NasRuntimeError(sample.origin, f"importer bug: unknown split {sample.split!r}")
        if sample.stem in first:  # one name per pair across splits: the stem is the pair's identity
            raise ConfigError(sample.origin, f"two pairs share the name {sample.stem!r} (the other: "
                                             f"{first[sample.stem].origin})")
        first[sample.stem] = sample
    counts = Counter(s.split for s in plan.samples)
    for split in ("train", "validation"):
        if not counts[split]:
            raise ConfigError(None, f"the import would leave the {split} split empty; a data set needs train and "
                                    "validation pairs (change the split options)")
    _check_geometry(plan)


def _check_geometry(plan: ImportPlan) -> None:
    """Crop within every frame, no resize that stretches, and one output size for the whole set."""
    geometry = plan.geometry
    for sample in plan.samples:
        width, height = sample.size
        if geometry.crop:
            cw, ch = geometry.crop
            if cw > width or ch > height:
                hint = f"; did you mean {ch}x{cw}?" if ch <= width and cw <= height else ""
                raise ConfigError(sample.origin, f"--crop {cw}x{ch} (width x height) does not fit in the frame's "
                                                 f"{width}×{height}{hint}")
            width, height = cw, ch
        if geometry.resize:
            rw, rh = geometry.resize
            if abs(rw * height - rh * width) > max(width, height):  # more than a pixel's rounding off
                raise ConfigError(sample.origin, f"--resize {rw}x{rh} would stretch the {width}×{height} frame "
                                                 f"(aspect {width / height:.3f} vs {rw / rh:.3f}); crop to the "
                                                 "aspect first (--crop) or pick a size of the same aspect")
    sizes = Counter(geometry.output_size(s.size) for s in plan.samples)
    if len(sizes) > 1:
        common = sizes.most_common(1)[0][0]
        odd = next(s for s in plan.samples if geometry.output_size(s.size) != common)
        listed = ", ".join(f"{w}×{h} ({n})" for (w, h), n in sizes.most_common())
        raise ConfigError(odd.origin, f"frames come in {len(sizes)} sizes ({listed}), this one "
                                      f"{odd.size[0]}×{odd.size[1]}; a data set has one size: pass --crop WxH "
                                      "(e.g. the smallest) to cut every frame to it")


# ------------------------------------------------------------------------------------------------ writing

def partial_folder(out: Path) -> Path:
    """Where an import into `out` writes until it is complete: a hidden sibling, on the same file system."""
    return out.with_name(f".{out.name}.importing")


def _write_png(path: Path, image: Image.Image) -> None:
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def _write_pair(folder: Path, sample: Sample, rgb: np.ndarray, depth_mm: np.ndarray) -> None:
    """Depth first, RGB second: the layout only counts a pair whose two files exist, each whole."""
    _write_png(folder / sample.split / "depth" / f"{sample.stem}.png", Image.fromarray(depth_mm))
    _write_png(folder / sample.split / "rgb" / f"{sample.stem}.png", Image.fromarray(rgb, "RGB"))


def _read_sample(sample: Sample, plan: ImportPlan) -> tuple[np.ndarray, np.ndarray]:
    """The pair as it will be written (uint8 RGB, uint16 mm), its shapes checked against the header's."""
    try:
        rgb, depth_m = sample.read()
    except (OSError, ValueError, KeyError) as exc:
        raise NasRuntimeError(sample.origin, f"cannot read the pair {sample.stem!r}: {exc}") from exc
    rgb = np.asarray(rgb)
    width, height = sample.size
    if rgb.shape != (height, width, 3) or np.shape(depth_m) != (height, width):
        raise NasRuntimeError(sample.origin, f"pair {sample.stem!r} reads as RGB {rgb.shape} and depth "
                                             f"{np.shape(depth_m)}, expected {width}×{height}")
    return plan.geometry.apply(rgb.astype(np.uint8), metres_to_mm(depth_m, plan.max_depth_m))


def _open_partial(plan: ImportPlan, out: Path, say: Callable[[str], None]) -> tuple[Path, dict[tuple[str, str], dict]]:
    """The partial folder to write into, and the pairs a previous run of the same command finished there."""
    folder, fingerprint = partial_folder(out), plan.fingerprint()
    done: dict[tuple[str, str], dict] = {}
    if folder.exists():
        progress = folder / PROGRESS
        lines = progress.read_text().splitlines() if progress.is_file() else []
        header = _parse(lines[0]) if lines else None
        if header is None or "fingerprint" not in header:
            raise ConfigError(folder, "exists and is not an import in progress; remove it or choose another --out")
        if header["fingerprint"] == fingerprint:
            for line in lines[1:]:
                if (entry := _parse(line)) and "stem" in entry:  # a line cut short by a kill is skipped
                    done[(entry["split"], entry["stem"])] = entry
        else:
            say(f"discarding {folder}: a partial import of another source or other options")
            shutil.rmtree(folder)
    if not folder.exists():
        folder.mkdir(parents=True)
        atomic_write_text(folder / PROGRESS, json.dumps({"fingerprint": fingerprint}) + "\n")
    for split in {s.split for s in plan.samples}:
        for kind in ("rgb", "depth"):
            (folder / split / kind).mkdir(parents=True, exist_ok=True)
    return folder, done


def _parse(line: str) -> dict | None:
    try:
        value = json.loads(line)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def write_import(plan: ImportPlan, out: Path, progress: Callable[[int, int], None] | None = None,
                 say: Callable[[str], None] | None = None) -> ImportResult:
    """Write `plan` as a checked data set at `out`, resuming an interrupted run of the same command.

    Raises ConfigError (nothing written) for a plan or `--out` that cannot work, NasRuntimeError when a pair
    cannot be read or the written set fails the data check (the partial folder is kept for inspection).
    """
    out = Path(out)
    say = say or (lambda line: None)
    _check_plan(plan, out)
    folder, done = _open_partial(plan, out, say)
    resumed = len(done)
    if done:
        say(f"resuming: {len(done)} of {len(plan.samples)} pair(s) already written in {folder}")
    if (how := plan.geometry.describe()) is not None:
        say(f"every frame is {how}")
    with open(folder / PROGRESS, "a") as log:
        for index, sample in enumerate(plan.samples):
            if (sample.split, sample.stem) not in done:
                rgb, depth_mm = _read_sample(sample, plan)
                valid = depth_mm[depth_mm > 1]
                if valid.size:
                    _write_pair(folder, sample, rgb, depth_mm)
                    entry = {"split": sample.split, "stem": sample.stem, "min_mm": int(valid.min()),
                             "max_mm": int(valid.max())}
                else:  # the data check refuses a depth map without a valid pixel: nothing to train or score on
                    entry = {"split": sample.split, "stem": sample.stem, "skipped": "no valid depth pixel"}
                log.write(json.dumps(entry) + "\n")
                log.flush()
                done[(sample.split, sample.stem)] = entry
            if progress:
                progress(index + 1, len(plan.samples))
    return _finish(plan, out, folder, done, resumed=resumed, say=say)


def _finish(plan: ImportPlan, out: Path, folder: Path, done: dict[tuple[str, str], dict], resumed: int,
            say: Callable[[str], None]) -> ImportResult:
    """Record the manifest, check what was written, then move it into place in one rename."""
    entries = [done[(s.split, s.stem)] for s in plan.samples]
    written = [e for e in entries if "skipped" not in e]
    skipped = [f"{e['split']}/{e['stem']}" for e in entries if "skipped" in e]
    counts = {split: sum(1 for e in written if e["split"] == split) for split in SPLITS}
    depth_range = ((min(e["min_mm"] for e in written) / 1000.0, max(e["max_mm"] for e in written) / 1000.0)
                   if written else None)
    for split in SPLITS:  # a split left empty (no test part) is no folder at all, as the layout allows
        if not counts[split] and (folder / split).is_dir():
            shutil.rmtree(folder / split)
    notes = list(plan.notes)
    if skipped:
        notes.append(f"left out {len(skipped)} pair(s) whose depth has no valid pixel, e.g. {skipped[0]}")
    manifest = {"source": plan.source, "inputs": plan.inputs, "options": plan.options,
                "geometry": {"crop": plan.geometry.crop, "crop_anchor": plan.geometry.anchor if plan.geometry.crop
                             else None, "resize": plan.geometry.resize},
                "max_depth_m": plan.max_depth_m, "counts": counts,
                "depth_range_m": list(depth_range) if depth_range else None, "skipped": skipped, "notes": notes,
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    problems = check_dataset(folder)
    if problems:
        raise NasRuntimeError(folder, f"the imported data set fails the data check ({len(problems)} problem(s), "
                                      f"first: {problems[0]}); it stays here for inspection")
    atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    if out.is_dir():  # an empty folder the user made
        out.rmdir()
    os.replace(folder, out)  # one rename: `out` holds nothing or the whole checked set
    (out / PROGRESS).unlink()
    return ImportResult(out=out, counts=counts, depth_range_m=depth_range, skipped=skipped, resumed=resumed,
                        notes=notes)
