"""Teacher training, registration of a user's model, and the depth cache with its fingerprints."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.teacher import TinyTeacher, expected_maps, scripted_teacher, tiny_data
from PIL import Image
from typer.testing import CliRunner

from nas.arch import Arch
from nas.cli import app
from nas.errors import ConfigError
from nas.models import DepthNet
from nas.teacher import (
    SPEC_FILE,
    Predictor,
    cache_teacher,
    data_fingerprint,
    ensure_cache,
    ensure_teacher,
    read_spec,
    register_model,
    train_teacher,
)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_data(tmp_path_factory.mktemp("data"))


def test_train_teacher_writes_weights_spec_and_metrics_then_caches(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "teacher"
    spec = train_teacher(data, out, "smoke")
    on_disk = read_spec(out)
    assert on_disk == spec
    assert spec.kind == "depthnet" and spec.arch["backbone"] == "resnet18"
    assert spec.arch["decoder_channels"] == [256, 128, 64, 32, 32]
    assert spec.budget["steps"] == 10 and tuple(spec.input_hw) == (96, 128)
    assert spec.data_fingerprint == data_fingerprint(data, ("train", "validation"))
    assert 0 < spec.val_metrics["si_rmse"] < 5 and spec.val_metrics["rmse"] > 0
    model = DepthNet(Arch.from_dict(spec.arch))
    model.load_state_dict(torch.load(out / "teacher.pt", weights_only=True))  # strict: the whole teacher

    again, trained = ensure_teacher(out, data, "smoke")
    assert not trained and again.model_sha256 == spec.model_sha256

    cache = ensure_cache(out, data, 48, 64)
    assert cache.rebuilt and cache.maps.shape == (6, 48, 64) and cache.maps.dtype == np.float16
    assert np.isfinite(cache.maps).all() and (np.asarray(cache.maps) > 0).all()
    assert cache.stems == [f"{i:05d}" for i in range(6)]
    assert set(cache.val_metrics) == {"si_rmse", "rmse", "log10", "rel"}
    # The cached maps are the teacher run at its own resolution (96x128), resized to the cache's.
    from nas.data.dataset import load_split

    full = load_split(data, "train", (128, 96))
    direct = Predictor(spec, out, torch.device("cpu"))(full.rgb, (48, 64))
    np.testing.assert_allclose(np.asarray(cache.maps, np.float32), direct, rtol=2e-3, atol=2e-3)


def test_teacher_retrained_when_data_changes(tmp_path: Path) -> None:
    root = tiny_data(tmp_path / "data", train=4, val=1)
    small = "tf_mobilenetv3_small_minimal_100"  # a light backbone: this test trains three times
    spec = train_teacher(root, tmp_path / "t", "smoke", backbone=small, steps=2)
    stamp = (tmp_path / "t" / SPEC_FILE).stat().st_mtime_ns
    # Another budget recipe (steps) is stale: ensure_teacher trains the smoke recipe again.
    new, trained = ensure_teacher(tmp_path / "t", root, "smoke", backbone=small)
    assert trained and new.budget["steps"] == 10 and (tmp_path / "t" / SPEC_FILE).stat().st_mtime_ns != stamp
    assert spec.model_sha256 != new.model_sha256
    _, trained = ensure_teacher(tmp_path / "t", root, "smoke", backbone=small)
    assert not trained
    # A touched validation file changes the data fingerprint: the self-managed teacher is retrained.
    val = next((root / "validation" / "depth").iterdir())
    os.utime(val, ns=(val.stat().st_atime_ns, val.stat().st_mtime_ns + 5_000_000_000))
    latest, trained = ensure_teacher(tmp_path / "t", root, "smoke", backbone=small)
    assert trained and latest.data_fingerprint == data_fingerprint(root, ("train", "validation"))
    assert latest.data_fingerprint != new.data_fingerprint


def test_cache_reused_while_fresh_and_rebuilt_when_data_changes(tmp_path: Path) -> None:
    root = tiny_data(tmp_path / "data")
    folder = tmp_path / "teacher"
    model = scripted_teacher(tmp_path / "tiny.pt")

    first, spec = cache_teacher(folder, root, 48, 64, model=model)
    assert first.rebuilt and spec.kind == "torchscript" and spec.label == "torchscript/model.pt"
    np.testing.assert_allclose(np.asarray(first.maps, np.float32), expected_maps(root, (48, 64)), rtol=1e-3)
    second, _ = cache_teacher(folder, root, 48, 64)
    assert not second.rebuilt and second.fingerprint == first.fingerprint and second.path == first.path

    # Touch: same bytes, new mtime -> stale, rebuilt; the stale file of that resolution is gone.
    rgb = root / "train" / "rgb" / "00002.png"
    os.utime(rgb, ns=(rgb.stat().st_atime_ns, rgb.stat().st_mtime_ns + 5_000_000_000))
    touched, _ = cache_teacher(folder, root, 48, 64)
    assert touched.rebuilt and touched.fingerprint != first.fingerprint
    assert not first.path.exists() and len(list((folder / "cache").glob("train-48x64-*.npy"))) == 1

    # Replace an image by another one: its map follows the new content.
    shutil.copyfile(root / "train" / "rgb" / "00004.png", rgb)
    replaced, _ = cache_teacher(folder, root, 48, 64)
    assert replaced.rebuilt
    maps = np.asarray(replaced.maps, np.float32)
    np.testing.assert_allclose(maps[2], maps[4], rtol=1e-6)
    assert not np.allclose(np.asarray(touched.maps, np.float32)[2], maps[2], rtol=1e-3)

    # A new training pair -> one more map; another resolution is a separate cache file.
    Image.open(root / "train" / "rgb" / "00000.png").save(root / "train" / "rgb" / "00006.png")
    shutil.copyfile(root / "train" / "depth" / "00000.png", root / "train" / "depth" / "00006.png")
    grown, _ = cache_teacher(folder, root, 48, 64)
    assert grown.rebuilt and grown.maps.shape == (7, 48, 64) and grown.stems[-1] == "00006"
    other, _ = cache_teacher(folder, root, 24, 32)
    assert other.rebuilt and other.maps.shape == (7, 24, 32) and grown.path.exists()

    # Swapping the teacher model changes the fingerprint even on unchanged data.
    swapped, _ = cache_teacher(folder, root, 48, 64, model=scripted_teacher(tmp_path / "other.pt", offset=2.0))
    assert swapped.rebuilt and swapped.fingerprint != grown.fingerprint
    np.testing.assert_allclose(np.asarray(swapped.maps, np.float32), np.asarray(grown.maps, np.float32) + 1.0,
                               rtol=2e-3)


def test_user_onnx_teacher_is_cached(data: Path, tmp_path: Path) -> None:
    onnx_path = tmp_path / "teacher.onnx"
    torch.onnx.export(TinyTeacher(), (torch.rand(1, 3, 48, 64) * 255,), str(onnx_path), dynamo=False,
                      input_names=["image"], output_names=["depth"],
                      dynamic_axes={"image": {0: "n", 2: "h", 3: "w"}, "depth": {0: "n", 2: "h", 3: "w"}})
    cache, spec = cache_teacher(tmp_path / "t", data, 48, 64, model=onnx_path)
    assert spec.kind == "onnx" and (tmp_path / "t" / "model.onnx").is_file()
    np.testing.assert_allclose(np.asarray(cache.maps, np.float32), expected_maps(data, (48, 64)), rtol=1e-3)
    meta = json.loads(cache.path.with_suffix(".json").read_text())
    assert meta["teacher"] == "onnx/model.onnx" and meta["resolution"] == [48, 64]
    assert meta["val_metrics"]["si_rmse"] > 0


def test_bad_teacher_inputs_are_config_errors(data: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_text("not a model")
    with pytest.raises(ConfigError, match="neither an ONNX"):
        register_model(junk, tmp_path / "t")
    with pytest.raises(ConfigError, match="no RGB/depth pairs"):
        train_teacher(tmp_path / "nowhere", tmp_path / "t2", "smoke")
    with pytest.raises(ConfigError, match="unknown timm backbone"):
        train_teacher(data, tmp_path / "t3", "smoke", backbone="no_such_net")
    with pytest.raises(ConfigError, match="no tensor fits"):
        train_teacher(data, tmp_path / "t4", "smoke", init=_checkpoint(tmp_path / "ck.pt", {"x": torch.zeros(3)}))


def _checkpoint(path: Path, state: dict) -> Path:
    torch.save(state, path)
    return path


def test_init_checkpoint_loads_backbone_weights(data: Path, tmp_path: Path) -> None:
    import timm

    source = timm.create_model("resnet18", pretrained=False)  # stands in for a local ImageNet checkpoint
    torch.nn.init.constant_(source.conv1.weight, 0.01)
    ck = _checkpoint(tmp_path / "resnet18.pth", {"state_dict": source.state_dict()})
    spec = train_teacher(data, tmp_path / "t", "smoke", init=ck, steps=2)
    assert spec.init == str(ck)
    trained = torch.load(tmp_path / "t" / "teacher.pt", weights_only=True)
    # Two AdamW steps at a tiny learning rate moves weights only slightly away from the checkpoint.
    assert torch.allclose(trained["encoder.model.conv1.weight"], source.conv1.weight, atol=1e-3)


def test_cli_cache_and_errors(data: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    model = scripted_teacher(tmp_path / "tiny.pt")
    result = runner.invoke(app, ["teacher", "cache", "--data", str(data), "--out", str(tmp_path / "t"),
                                 "--model", str(model), "--budget", "smoke"])
    assert result.exit_code == 0, result.output
    assert "torchscript/model.pt: 6 maps at 128×96 (rebuilt)" in result.output
    result = runner.invoke(app, ["teacher", "cache", "--data", str(data), "--out", str(tmp_path / "t"),
                                 "--budget", "smoke"])
    assert result.exit_code == 0 and "fresh, reused" in result.output
    result = runner.invoke(app, ["teacher", "cache", "--data", str(data), "--out", str(tmp_path / "empty")])
    assert result.exit_code == 2 and result.output.startswith("error:") and len(result.output.splitlines()) == 1
    assert "empty: teacher folder does not exist" in result.output
    result = runner.invoke(app, ["teacher", "train", "--data", str(data), "--out", str(tmp_path / "x"),
                                 "--budget", "huge"])
    assert result.exit_code == 2 and "unknown budget 'huge'" in result.output
