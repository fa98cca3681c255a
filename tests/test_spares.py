"""Spare conversion children: import ahead, convert once, the same model as a fresh child, never outlive use."""

import numpy as np
import pytest

from nas.export.onnx_export import export_onnx
from nas.export.spares import SPARES, SpareConverters
from nas.export.tflite_convert import convert_to_tflite
from nas.files import sha256_file
from nas.models import DepthNet

from test_export import TINY


@pytest.fixture(autouse=True)
def no_spares_left():
    SPARES.dismiss_all()
    yield
    SPARES.dismiss_all()


def test_a_spare_child_converts_once_to_the_same_model_as_a_fresh_child(tmp_path):
    import torch

    torch.manual_seed(0)
    onnx_path = export_onnx(DepthNet(TINY).eval(), tmp_path / "m.onnx", 64, 96)
    sample = np.random.default_rng(0).random((20, 128, 128, 3), dtype=np.float32)

    fresh = convert_to_tflite(onnx_path, tmp_path / "fresh.tflite", sample)
    SPARES.keep_ready(1)
    (spare,) = [s.process for s in SPARES._spares]
    via_spare = convert_to_tflite(onnx_path, tmp_path / "spare.tflite", sample, log_path=tmp_path / "spare.log")

    assert len(SPARES) == 0 and spare.returncode == 0  # taken, used for one conversion, exited
    assert sha256_file(via_spare) == sha256_file(fresh)


def test_an_idle_spare_ends_when_its_parent_stops_feeding_it():
    spares = SpareConverters()
    spares.keep_ready(1)
    process = spares.take()
    assert process is not None and len(spares) == 0
    process.stdin.close()  # what the parent's exit does to the pipe
    assert process.wait(timeout=120) == 0


def test_a_spare_started_for_another_environment_is_not_used(monkeypatch):
    spares = SpareConverters()
    spares.keep_ready(2)
    assert len(spares) == 2
    started = [s.process for s in spares._spares]
    monkeypatch.setenv("NAS_TEST_CHANGED", "1")  # e.g. a test or a user changing the environment in between
    assert spares.take() is None
    assert all(p.returncode is not None for p in started)  # dismissed, not left waiting
    spares.keep_ready(1)  # one for the environment as it is now
    process = spares.take()
    assert process is not None and process.poll() is None
    process.kill()
    process.communicate()
