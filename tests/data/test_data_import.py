"""`nas data import`: NYU Depth v2, DIODE, KITTI and plain folders into the MAI layout, on tiny files built
with each source's real layout; pixels must land where they belong, in the right unit."""

import json

import h5py
import numpy as np
import pytest
import scipy.io
from PIL import Image
from typer.testing import CliRunner

from nas.cli import app
from nas.data.check import check_dataset
from nas.data.importers import writer
from nas.data.importers.diode import plan_diode
from nas.data.importers.folder import plan_folder
from nas.data.importers.kitti import plan_kitti
from nas.data.importers.nyu import plan_nyu
from nas.data.importers.writer import Geometry, write_import
from nas.errors import ConfigError

W, H = 8, 6


def _rgb(seed: int, width: int = W, height: int = H) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _depth_png(path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.mode in ("I;16", "I")
        return np.asarray(im).astype(np.int64)


def _png(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def _error_lines(result) -> list[str]:
    return [line for line in result.output.splitlines() if line.startswith("error:")]


def _tree(root) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.png"))}


# ------------------------------------------------------------------------------------------------ NYU

@pytest.fixture()
def nyu(tmp_path):
    """A labeled set of 6 frames as MATLAB v7.3 stores it: images (N, 3, W, H), depths (N, W, H)."""
    n = 6
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 3, W, H), dtype=np.uint8)
    depths = rng.uniform(0.5, 9.0, (n, W, H)).astype(np.float32)
    images[2, :, 5, 1] = [10, 20, 30]  # frame 3 (1-based), row 1, column 5: R, G, B
    depths[2, 5, 1] = 2.345  # metres at the same pixel
    depths[2, 0, 4] = np.nan  # row 4, column 0: unknown
    mat = tmp_path / "nyu_depth_v2_labeled.mat"
    with h5py.File(mat, "w") as handle:
        handle["images"] = images
        handle["depths"] = depths
        handle["labels"] = np.zeros((n, W, H), np.uint16)
    splits = tmp_path / "splits.mat"
    scipy.io.savemat(splits, {"trainNdxs": np.array([[1], [2], [4], [5]], np.float64),
                              "testNdxs": np.array([[3], [6]], np.float64)})
    return mat, splits


def test_nyu_pixels_survive_transposed_storage_and_official_split_is_one_based(nyu, tmp_path):
    mat, splits = nyu
    out = tmp_path / "out"
    result = write_import(plan_nyu(mat, splits, val=1, seed=0), out)
    assert result.counts == {"train": 3, "validation": 1, "test": 2}
    assert sorted(p.stem for p in (out / "test" / "rgb").iterdir()) == ["nyu_00003", "nyu_00006"]
    rgb, depth = _png(out / "test" / "rgb" / "nyu_00003.png"), _depth_png(out / "test" / "depth" / "nyu_00003.png")
    assert rgb.shape == (H, W, 3) and depth.shape == (H, W)
    assert rgb[1, 5].tolist() == [10, 20, 30]
    assert depth[1, 5] == 2345
    assert depth[4, 0] == 0  # NaN -> unknown
    assert check_dataset(out) == []
    manifest = json.loads((out / "import.json").read_text())
    assert manifest["source"] == "nyu" and len(manifest["inputs"]["sha256"]) == 64
    assert manifest["inputs"]["splits"]["sha256"] and manifest["counts"]["test"] == 2
    assert not (out / writer.PROGRESS).exists() and not writer.partial_folder(out).exists()


def test_nyu_validation_is_carved_from_train_with_a_stable_seed(nyu, tmp_path):
    mat, splits = nyu
    chosen = []
    for name in ("a", "b"):
        write_import(plan_nyu(mat, splits, val=2, seed=5), tmp_path / name)
        chosen.append(sorted(p.stem for p in (tmp_path / name / "validation" / "rgb").iterdir()))
    assert chosen[0] == chosen[1] and len(chosen[0]) == 2
    assert set(chosen[0]) <= {"nyu_00001", "nyu_00002", "nyu_00004", "nyu_00005"}
    seeds = {tuple(sorted(s.stem for s in plan_nyu(mat, splits, val=2, seed=seed).samples if s.split == "validation"))
             for seed in range(8)}
    assert len(seeds) > 1  # the seed matters


def test_nyu_without_splits_draws_a_seeded_split_and_reads_a_v73_splits_file(nyu, tmp_path):
    mat, _ = nyu
    plan = plan_nyu(mat, None, val=1, test=2, seed=3)
    assert [s.split for s in plan.samples] == [s.split for s in plan_nyu(mat, None, val=1, test=2, seed=3).samples]
    assert sum(s.split == "test" for s in plan.samples) == 2
    v73 = tmp_path / "splits73.mat"
    with h5py.File(v73, "w") as handle:
        handle["trainNdxs"] = np.array([[1, 2, 4, 5]], np.float64)
        handle["testNdxs"] = np.array([[3, 6]], np.float64)
    assert {s.stem for s in plan_nyu(mat, v73, val=1).samples if s.split == "test"} == {"nyu_00003", "nyu_00006"}


def test_nyu_bad_inputs_exit_2_with_one_line_naming_the_file(nyu, tmp_path):
    mat, splits = nyu
    out = tmp_path / "out"
    text = tmp_path / "notes.mat"
    text.write_text("not a mat file")
    broken = tmp_path / "broken.mat"
    with h5py.File(broken, "w") as handle:
        handle["images"] = np.zeros((2, 3, W, H), np.uint8)
    mismatched = tmp_path / "mismatched.mat"
    with h5py.File(mismatched, "w") as handle:
        handle["images"] = np.zeros((3, 3, W, H), np.uint8)
        handle["depths"] = np.ones((2, W, H), np.float32)
    bad_splits = tmp_path / "bad_splits.mat"
    scipy.io.savemat(bad_splits, {"trainNdxs": np.array([[0], [1]]), "testNdxs": np.array([[3]])})
    cases = [((text,), "not a MATLAB v7.3"), ((broken,), "'depths'"), ((mismatched,), "3 frames but 'depths' 2"),
             ((mat, "--splits", text), "not a MATLAB file"), ((mat, "--splits", bad_splits), "outside 1..6")]
    for args, message in cases:
        extra = ["--splits", args[2]] if len(args) > 1 else []
        result = _invoke("data", "import", "nyu", args[0], "--out", out, *extra)
        lines = _error_lines(result)
        named = args[2] if len(args) > 1 else args[0]
        assert result.exit_code == 2, result.output
        assert len(lines) == 1 and str(named) in lines[0] and message in lines[0], result.output
        assert not out.exists() and not writer.partial_folder(out).exists()


def test_nyu_through_the_cli_then_data_check_passes(nyu, tmp_path):
    mat, splits = nyu
    out = tmp_path / "nyu"
    result = _invoke("data", "import", "nyu", mat, "--splits", splits, "--val", "1", "--out", out)
    assert result.exit_code == 0, result.output
    assert "3 train, 1 validation, 2 test" in result.output and "depth of valid pixels" in result.output
    assert _invoke("data", "check", out).exit_code == 0


# ---------------------------------------------------------------------------------------------- DIODE

def _diode_scan(root, split, kind, scene, scan, name, seed, mask_pixel=None, depth_at=None):
    folder = root / split / kind / f"scene_{scene:05d}" / f"scan_{scan:05d}"
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_rgb(seed)).save(folder / f"{name}.png")
    depth = np.random.default_rng(seed).uniform(1, 20, (H, W, 1)).astype(np.float32)
    mask = np.ones((H, W), np.float32)
    if depth_at:
        (row, col), metres = depth_at
        depth[row, col, 0] = metres
    if mask_pixel:
        mask[mask_pixel] = 0
    np.save(folder / f"{name}_depth.npy", depth)
    np.save(folder / f"{name}_depth_mask.npy", mask)


@pytest.fixture()
def diode(tmp_path):
    root = tmp_path / "diode"
    _diode_scan(root, "train", "indoors", 1, 10, "00001_00010_indoors_000_010", 1, depth_at=((3, 6), 4.2))
    _diode_scan(root, "train", "indoors", 1, 11, "00001_00011_indoors_000_010", 2, mask_pixel=(0, 0))
    _diode_scan(root, "train", "outdoor", 2, 20, "00002_00020_outdoor_000_010", 3, depth_at=((2, 2), 120.0))
    _diode_scan(root, "val", "indoors", 3, 30, "00003_00030_indoors_000_010", 4)
    _diode_scan(root, "val", "outdoor", 4, 40, "00004_00040_outdoor_000_010", 5)
    return root


def test_diode_masks_and_far_outdoor_depth_become_unknown(diode, tmp_path):
    out = tmp_path / "out"
    result = write_import(plan_diode(diode, part="both"), out)
    assert result.counts == {"train": 3, "validation": 2, "test": 0}
    assert not (out / "test").exists()
    assert _depth_png(out / "train" / "depth" / "00001_00010_indoors_000_010.png")[3, 6] == 4200
    assert _depth_png(out / "train" / "depth" / "00001_00011_indoors_000_010.png")[0, 0] == 0  # masked
    assert _depth_png(out / "train" / "depth" / "00002_00020_outdoor_000_010.png")[2, 2] == 0  # beyond 65.535 m
    assert np.array_equal(_png(out / "train" / "rgb" / "00001_00010_indoors_000_010.png"), _rgb(1))
    assert check_dataset(out) == []
    indoor = plan_diode(diode, part="indoor")
    assert {s.split for s in indoor.samples} == {"train", "validation"} and len(indoor.samples) == 3


def test_diode_missing_mask_exits_2_naming_it(diode, tmp_path):
    mask = next(diode.rglob("*_depth_mask.npy"))
    mask.unlink()
    result = _invoke("data", "import", "diode", diode, "--out", tmp_path / "out")
    assert result.exit_code == 2 and len(_error_lines(result)) == 1 and str(mask) in _error_lines(result)[0]
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------- KITTI

def _kitti_frame(annotations, raw, split, drive, frame, size, seed, metres_at=None):
    width, height = size
    depth_dir = annotations / split / drive / "proj_depth" / "groundtruth" / "image_02"
    rgb_dir = raw / drive[:10] / drive / "image_02" / "data"
    depth_dir.mkdir(parents=True, exist_ok=True)
    rgb_dir.mkdir(parents=True, exist_ok=True)
    values = np.zeros((height, width), np.uint16)
    values[::2, ::3] = np.random.default_rng(seed).integers(256, 256 * 80, values[::2, ::3].shape)  # sparse
    if metres_at:
        (row, col), metres = metres_at
        values[row, col] = round(metres * 256)
    Image.fromarray(values).save(depth_dir / f"{frame:010d}.png")
    Image.fromarray(_rgb(seed, width, height)).save(rgb_dir / f"{frame:010d}.png")


@pytest.fixture()
def kitti(tmp_path):
    annotations, raw = tmp_path / "data_depth_annotated", tmp_path / "raw"
    a, b = "2011_09_26_drive_0001_sync", "2011_09_28_drive_0002_sync"
    _kitti_frame(annotations, raw, "train", a, 5, (12, 8), 1, metres_at=((7, 4), 2.5))
    _kitti_frame(annotations, raw, "train", a, 6, (12, 8), 2)
    _kitti_frame(annotations, raw, "train", b, 5, (10, 8), 3)
    _kitti_frame(annotations, raw, "val", b, 9, (10, 8), 4)
    return annotations, raw


def test_kitti_sizes_must_agree_unless_cropped_and_the_bottom_crop_keeps_pixels_in_place(kitti, tmp_path):
    annotations, raw = kitti
    with pytest.raises(ConfigError, match="2 sizes"):
        write_import(plan_kitti(annotations, raw), tmp_path / "uncropped")
    with pytest.raises(ConfigError, match="did you mean 10x6"):  # width x height the other way round
        write_import(plan_kitti(annotations, raw, geometry=Geometry(crop=(6, 10), anchor="bottom")), tmp_path / "x")
    assert not (tmp_path / "uncropped").exists() and not (tmp_path / "x").exists()
    out = tmp_path / "out"
    result = write_import(plan_kitti(annotations, raw, geometry=Geometry(crop=(8, 6), anchor="bottom")), out)
    assert result.counts == {"train": 3, "validation": 1, "test": 0}
    stem = "2011_09_26_drive_0001_sync_02_0000000005"
    depth, rgb = _depth_png(out / "train" / "depth" / f"{stem}.png"), _png(out / "train" / "rgb" / f"{stem}.png")
    assert depth.shape == (6, 8)
    # A 12×8 frame cropped to 8×6 at the bottom centre: rows 2..7, columns 2..9; (7, 4) lands at (5, 2).
    assert depth[5, 2] == 2500  # 640 / 256 m = 2.5 m
    assert np.array_equal(rgb, _rgb(1, 12, 8)[2:8, 2:10])
    assert (depth == 0).mean() > 0.5  # sparse stays sparse
    assert check_dataset(out) == []


def test_kitti_through_the_cli_with_one_drive_keeps_its_size(kitti, tmp_path):
    annotations, raw = kitti
    for drive in annotations.glob("*/2011_09_28_drive_0002_sync"):
        for path in sorted(drive.rglob("*.png"), reverse=True):
            path.unlink()
    (annotations / "val" / "2011_09_26_drive_0001_sync" / "proj_depth" / "groundtruth" / "image_02").mkdir(parents=True)
    val_frame = annotations / "train" / "2011_09_26_drive_0001_sync" / "proj_depth" / "groundtruth" / "image_02"
    (val_frame / "0000000006.png").rename(val_frame.parents[3].parent / "val" / "2011_09_26_drive_0001_sync" /
                                          "proj_depth" / "groundtruth" / "image_02" / "0000000006.png")
    out = tmp_path / "out"
    result = _invoke("data", "import", "kitti", annotations, "--rgb-root", raw, "--out", out)
    assert result.exit_code == 0, result.output
    assert _invoke("data", "check", out).exit_code == 0
    with Image.open(next((out / "train" / "rgb").iterdir())) as im:
        assert im.size == (12, 8)


def test_kitti_missing_rgb_exits_2_naming_the_frame(kitti, tmp_path):
    annotations, raw = kitti
    missing = raw / "2011_09_26" / "2011_09_26_drive_0001_sync" / "image_02" / "data" / "0000000006.png"
    missing.unlink()
    result = _invoke("data", "import", "kitti", annotations, "--rgb-root", raw, "--crop", "8x6", "--out",
                     tmp_path / "out")
    assert result.exit_code == 2 and len(_error_lines(result)) == 1 and str(missing) in _error_lines(result)[0]


# --------------------------------------------------------------------------------------------- folders

@pytest.fixture()
def pairs(tmp_path):
    """Ten pairs: depth as 16-bit PNG in millimetres."""
    rgb_dir, depth_dir = tmp_path / "rgb", tmp_path / "depth"
    rgb_dir.mkdir()
    depth_dir.mkdir()
    for i in range(10):
        image = _rgb(i)
        depth = np.random.default_rng(100 + i).integers(500, 9000, (H, W)).astype(np.uint16)
        if i == 0:
            image[4, 7] = [200, 100, 50]
            depth[4, 7] = 1234
        Image.fromarray(image).save(rgb_dir / f"frame{i:02d}.png")
        Image.fromarray(depth).save(depth_dir / f"frame{i:02d}.png")
    return rgb_dir, depth_dir


def _find(out, stem):
    return next(p for p in out.glob(f"*/depth/{stem}.png")), next(p for p in out.glob(f"*/rgb/{stem}.png"))


def test_folder_png_millimetres_through_the_cli(pairs, tmp_path):
    rgb_dir, depth_dir = pairs
    out = tmp_path / "out"
    result = _invoke("data", "import", "folder", "--rgb", rgb_dir, "--depth", depth_dir, "--depth-unit", "mm",
                     "--val-fraction", "0.2", "--test-fraction", "0.1", "--out", out)
    assert result.exit_code == 0, result.output
    assert "7 train, 2 validation, 1 test" in result.output
    assert _invoke("data", "check", out).exit_code == 0
    depth, rgb = _find(out, "frame00")
    assert _depth_png(depth)[4, 7] == 1234 and _png(rgb)[4, 7].tolist() == [200, 100, 50]
    manifest = json.loads((out / "import.json").read_text())
    assert len(manifest["inputs"]["rgb_listing_sha256"]) == 64 and manifest["options"]["depth_unit"] == "mm"


def test_folder_npy_and_tiff_in_metres_invalid_values_become_zero(tmp_path):
    rgb_dir, depth_dir = tmp_path / "rgb", tmp_path / "depth"
    rgb_dir.mkdir()
    depth_dir.mkdir()
    for i in range(4):
        Image.fromarray(_rgb(i)).save(rgb_dir / f"{i}.jpg" if i == 3 else rgb_dir / f"{i}.png")
        metres = np.full((H, W), 3.0, np.float32)
        metres[0, 1], metres[0, 2], metres[0, 3], metres[0, 4], metres[0, 5] = np.nan, np.inf, -1.0, 70.0, 0.0
        metres[5, 6] = 1.2345
        if i % 2:
            Image.fromarray(metres, "F").save(depth_dir / f"{i}.tif")
        else:
            np.save(depth_dir / f"{i}.npy", metres[..., None] if i == 2 else metres)
    out = tmp_path / "out"
    write_import(plan_folder(rgb_dir, depth_dir, "m", val_fraction=0.25, test_fraction=0), out)
    for i in range(4):
        depth = _depth_png(_find(out, str(i))[0])
        assert depth[0, 1:6].tolist() == [0, 0, 0, 0, 0]
        assert depth[5, 6] == 1234 or depth[5, 6] == 1235  # float32 1.2345 m rounds to the nearest mm
        assert depth[3, 3] == 3000
    cm = plan_folder(rgb_dir, depth_dir, "cm", depth_scale=100.0, val_fraction=0.25, test_fraction=0)
    assert write_import(cm, tmp_path / "cm").depth_range_m == pytest.approx((1.2345, 3.0), abs=1e-3)
    assert _depth_png(_find(tmp_path / "cm", "0")[0])[3, 3] == 3000  # 3 × 100 cm


def test_folder_mismatches_exit_2_before_any_write(pairs, tmp_path):
    rgb_dir, depth_dir = pairs
    out = tmp_path / "out"
    (depth_dir / "frame09.png").unlink()
    result = _invoke("data", "import", "folder", "--rgb", rgb_dir, "--depth", depth_dir, "--depth-unit", "mm",
                     "--out", out)
    assert result.exit_code == 2 and len(_error_lines(result)) == 1
    assert str(rgb_dir / "frame09.png") in _error_lines(result)[0] and "10 RGB vs 9 depth" in _error_lines(result)[0]
    (rgb_dir / "frame09.png").unlink()
    Image.fromarray(np.ones((H + 1, W), np.uint16)).save(depth_dir / "frame03.png")
    result = _invoke("data", "import", "folder", "--rgb", rgb_dir, "--depth", depth_dir, "--depth-unit", "mm",
                     "--out", out)
    assert result.exit_code == 2 and str(depth_dir / "frame03.png") in _error_lines(result)[0]
    assert not out.exists() and not writer.partial_folder(out).exists()


def test_an_output_folder_that_is_not_empty_is_refused_and_left_alone(pairs, tmp_path):
    rgb_dir, depth_dir = pairs
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    result = _invoke("data", "import", "folder", "--rgb", rgb_dir, "--depth", depth_dir, "--depth-unit", "mm",
                     "--out", out)
    assert result.exit_code == 2 and len(_error_lines(result)) == 1 and str(out) in _error_lines(result)[0]
    assert [p.name for p in out.iterdir()] == ["mine.txt"] and (out / "mine.txt").read_text() == "keep me"
    (out / "mine.txt").unlink()  # an empty folder is fine
    assert _invoke("data", "import", "folder", "--rgb", rgb_dir, "--depth", depth_dir, "--depth-unit", "mm",
                   "--out", out).exit_code == 0


def test_resize_keeps_the_aspect_or_is_refused(pairs, tmp_path):
    rgb_dir, depth_dir = pairs
    with pytest.raises(ConfigError, match="stretch"):
        write_import(plan_folder(rgb_dir, depth_dir, "mm", geometry=Geometry(resize=(8, 8))), tmp_path / "a")
    write_import(plan_folder(rgb_dir, depth_dir, "mm", geometry=Geometry(resize=(4, 3))), tmp_path / "b")
    depth = _depth_png(_find(tmp_path / "b", "frame00")[0])
    assert depth.shape == (3, 4)
    source = np.asarray(Image.open(depth_dir / "frame00.png")).astype(np.int64)
    assert set(depth.ravel()) <= set(source.ravel())  # nearest neighbour: no blended depth


# ----------------------------------------------------------------------------------------------- resume

def test_an_interrupted_import_resumes_to_the_same_result(pairs, tmp_path, monkeypatch):
    rgb_dir, depth_dir = pairs
    fresh = tmp_path / "fresh"
    write_import(plan_folder(rgb_dir, depth_dir, "mm"), fresh)

    out = tmp_path / "out"
    real_write, calls = writer._write_pair, []

    def failing_write(*args):
        if len(calls) == 4:
            raise KeyboardInterrupt  # as Ctrl-C after four pairs
        calls.append(args[1].stem)
        real_write(*args)

    monkeypatch.setattr(writer, "_write_pair", failing_write)
    with pytest.raises(KeyboardInterrupt):
        write_import(plan_folder(rgb_dir, depth_dir, "mm"), out)
    assert not out.exists() and writer.partial_folder(out).is_dir()

    monkeypatch.setattr(writer, "_write_pair", lambda *args: (calls.append(args[1].stem), real_write(*args)))
    said: list[str] = []
    result = write_import(plan_folder(rgb_dir, depth_dir, "mm"), out, say=said.append)
    assert result.resumed == 4 and len(calls) == 10 and len(set(calls)) == 10  # each pair written once
    assert any("resuming: 4 of 10" in line for line in said)
    assert _tree(out) == _tree(fresh)
    assert not writer.partial_folder(out).exists() and not (out / writer.PROGRESS).exists()


def test_a_partial_folder_of_other_options_is_started_over(pairs, tmp_path, monkeypatch):
    rgb_dir, depth_dir = pairs
    out = tmp_path / "out"
    monkeypatch.setattr(writer, "_write_pair", lambda *args: (_ for _ in ()).throw(RuntimeError("disk gone")))
    with pytest.raises(RuntimeError):
        write_import(plan_folder(rgb_dir, depth_dir, "mm", seed=1), out)
    monkeypatch.undo()
    said: list[str] = []
    result = write_import(plan_folder(rgb_dir, depth_dir, "mm", seed=2), out, say=said.append)
    assert result.resumed == 0 and any("discarding" in line for line in said)
    assert check_dataset(out) == []
