"""Synthetic generator and data-set checker."""

import numpy as np
import pytest
from PIL import Image

from nas.data.check import check_dataset
from nas.data.dataset import load_split
from nas.data.synth import MAX_DEPTH_M, render_scene, synthesize


def test_render_is_deterministic_and_in_range():
    rgb1, d1 = render_scene(7, 160, 120)
    rgb2, d2 = render_scene(7, 160, 120)
    rgb3, d3 = render_scene(8, 160, 120)
    assert np.array_equal(rgb1, rgb2) and np.array_equal(d1, d2)
    assert not np.array_equal(d1, d3)
    assert rgb1.shape == (120, 160, 3) and rgb1.dtype == np.uint8
    assert d1.shape == (120, 160) and d1.dtype == np.uint16
    valid = d1[d1 > 0]
    assert valid.size > 0.5 * d1.size
    assert valid.min() >= 400 and valid.max() <= MAX_DEPTH_M * 1000
    assert rgb1.std() > 10  # textured and shaded, not flat


def test_scenes_carry_perspective():
    # The floor recedes: on average, pixels lower in the image are closer.
    rows = []
    for seed in range(6):
        _, d = render_scene(seed, 160, 120)
        bottom, middle = d[100:], d[55:65]
        rows.append(np.median(bottom[bottom > 0]) < np.median(middle[middle > 0]))
    assert sum(rows) >= 5


@pytest.fixture()
def tiny_dataset(tmp_path):
    root = tmp_path / "data"
    synthesize(root, {"train": 3, "validation": 2, "test": 1}, seed=1, width=64, height=48)
    return root


def test_synthesize_writes_mai_layout(tiny_dataset):
    assert sorted(p.name for p in (tiny_dataset / "train" / "rgb").iterdir()) == ["00000.png", "00001.png", "00002.png"]
    depth = Image.open(tiny_dataset / "train" / "depth" / "00000.png")
    assert depth.mode.startswith("I;16") or depth.mode == "I"
    assert check_dataset(tiny_dataset) == []
    split = load_split(tiny_dataset, "validation", (32, 24))
    assert split.rgb.shape == (2, 24, 32, 3) and split.depth_mm.shape == (2, 24, 32)


def test_checker_names_every_bad_file(tiny_dataset):
    train = tiny_dataset / "train"
    (train / "depth" / "00000.png").unlink()  # RGB without depth
    Image.fromarray(np.zeros((48, 64), np.uint16)).save(train / "depth" / "orphan.png")  # depth without RGB
    (train / "rgb" / "00001.png").write_bytes(b"not a png")  # unreadable
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(train / "depth" / "00002.png")  # 8-bit RGB depth
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(tiny_dataset / "validation" / "rgb" / "00000.png")
    problems = {p.path.relative_to(tiny_dataset).as_posix(): p.message for p in check_dataset(tiny_dataset)}
    assert "no depth map" in problems["train/rgb/00000.png"]
    assert "no RGB image" in problems["train/depth/orphan.png"]
    assert "unreadable" in problems["train/rgb/00001.png"]
    assert "16-bit" in problems["train/depth/00002.png"]
    assert "differs" in problems["validation/depth/00000.png"]
    assert len(problems) == 5


def test_checker_refuses_depth_without_valid_pixels_and_32_bit_depth(tiny_dataset):
    train = tiny_dataset / "train" / "depth"
    Image.fromarray(np.ones((48, 64), np.uint16)).save(train / "00000.png")  # every pixel "unknown"
    Image.fromarray(np.full((48, 64), 70000, np.int32)).save(train / "00001.png", format="TIFF")  # 32-bit
    problems = {p.path.name: p.message for p in check_dataset(tiny_dataset)}
    assert "no valid pixel" in problems["00000.png"]
    assert "TIFF" in problems["00001.png"]
    assert len(problems) == 2


def test_checker_reports_missing_folder(tmp_path):
    problems = check_dataset(tmp_path / "nowhere")
    assert len(problems) == 1 and "does not exist" in problems[0].message
    (tmp_path / "d" / "train").mkdir(parents=True)
    messages = [str(p) for p in check_dataset(tmp_path / "d")]
    assert any("validation" in m and "missing" in m for m in messages)
    assert any("train/rgb" in m and "missing" in m for m in messages)


def test_synthesize_in_worker_processes_writes_the_same_files(tmp_path):
    counts = {"train": 3, "validation": 1, "test": 1}
    synthesize(tmp_path / "one", counts, seed=4, width=48, height=36)
    seen: list[int] = []
    synthesize(tmp_path / "two", counts, seed=4, width=48, height=36, workers=2, progress=lambda d, t: seen.append(d))
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*.png"))
    assert len(files) == 10 and seen == [1, 2, 3, 4, 5]
    assert all((tmp_path / "one" / f).read_bytes() == (tmp_path / "two" / f).read_bytes() for f in files)
