"""The conversion server: one import per worker, a forked child per conversion with the same model as a
fresh child, crashes and timeouts contained in that child, never outliving its parent."""

import os
import signal
import subprocess
import threading
import time

import numpy as np
import psutil
import pytest
import torch
from helpers.export import TINY

from nas.export import ExportError
from nas.export.conversion_server import CONVERSIONS, ConversionServer, run_fresh
from nas.export.onnx_export import export_onnx
from nas.export.tflite_convert import convert_to_tflite
from nas.infra.files import sha256_file
from nas.models import DepthNet


@pytest.fixture(autouse=True)
def no_server_left():
    CONVERSIONS.stop()
    yield
    CONVERSIONS.stop()


def fake_onnxsim(tmp_path, monkeypatch, body: str) -> None:
    """An onnxsim package whose `simplify` runs `body`, first on the conversion children's path."""
    fake = tmp_path / "fake" / "onnxsim"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(f"import os, time\n\ndef simplify(*args, **kwargs):\n    {body}\n")
    monkeypatch.setenv("PYTHONPATH", f"{fake.parent}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")


def test_forked_children_convert_to_the_same_model_as_a_fresh_child_with_one_import(tmp_path, monkeypatch):
    torch.manual_seed(0)
    onnx_path = export_onnx(DepthNet(TINY).eval(), tmp_path / "m.onnx", 64, 96)
    sample = np.random.default_rng(0).random((20, 128, 128, 3), dtype=np.float32)

    first = convert_to_tflite(onnx_path, tmp_path / "first.tflite", sample)
    server = CONVERSIONS._process
    second = convert_to_tflite(onnx_path, tmp_path / "second.tflite", sample, log_path=tmp_path / "second.log")
    assert CONVERSIONS._process is server and server.poll() is None  # one server served both, and waits on
    monkeypatch.setattr(ConversionServer, "run", lambda self, cwd, argv, timeout_s: run_fresh(cwd, argv, timeout_s))
    fresh = convert_to_tflite(onnx_path, tmp_path / "fresh.tflite", sample)
    assert sha256_file(first) == sha256_file(second) == sha256_file(fresh)

    CONVERSIONS.stop()  # what the parent's exit does: the server reads end-of-input and ends
    assert server.returncode == 0


def test_a_crash_or_timeout_ends_only_its_child_and_a_changed_environment_gets_a_new_server(tmp_path, monkeypatch):
    conv_onnx = export_onnx(torch.nn.Conv2d(3, 1, 3, padding=1).eval(), tmp_path / "c.onnx", 16, 16)
    CONVERSIONS.start()
    before, starts = CONVERSIONS._process, CONVERSIONS.starts

    fake_onnxsim(tmp_path, monkeypatch, "time.sleep(600)")  # a conversion that hangs
    with pytest.raises(subprocess.TimeoutExpired):
        CONVERSIONS.run(tmp_path, [str(conv_onnx), str(tmp_path / "tf")], timeout_s=20)
    # The changed PYTHONPATH replaced the server (its children import the fake), and the hung child was killed.
    assert before.returncode == 0 and CONVERSIONS.starts == starts + 1
    hung_server = CONVERSIONS._process
    assert hung_server.poll() is None

    monkeypatch.undo()
    fake_onnxsim(tmp_path / "abort", monkeypatch, "os.abort()")  # a conversion that crashes its process
    code, output = CONVERSIONS.run(tmp_path, [str(conv_onnx), str(tmp_path / "tf")], timeout_s=120)
    assert code == -6 and "nas: graph simplified" not in output
    crashed_server = CONVERSIONS._process
    assert crashed_server.poll() is None  # the server outlived its child's abort

    monkeypatch.undo()  # the real onnxsim again: a new server, and the conversion works
    tflite = convert_to_tflite(conv_onnx, tmp_path / "c.tflite", np.zeros((20, 128, 128, 3), np.float32))
    assert tflite.stat().st_size > 0 and CONVERSIONS.starts == starts + 3


def test_a_server_killed_from_outside_costs_no_conversion(tmp_path):
    conv_onnx = export_onnx(torch.nn.Conv2d(3, 1, 3, padding=1).eval(), tmp_path / "c.onnx", 16, 16)
    CONVERSIONS.start()
    CONVERSIONS._process.kill()
    CONVERSIONS._process.wait()
    sample = np.zeros((20, 128, 128, 3), np.float32)
    tflite = convert_to_tflite(conv_onnx, tmp_path / "c.tflite", sample)  # ran fresh
    assert tflite.stat().st_size > 0
    convert_to_tflite(conv_onnx, tmp_path / "d.tflite", sample)
    assert CONVERSIONS._process.poll() is None  # the next conversion started a server again


def test_a_timed_out_conversion_is_an_export_error(tmp_path, monkeypatch):
    def hang(self, cwd, argv, timeout_s):
        raise subprocess.TimeoutExpired("onnx2tf_job", timeout_s)

    monkeypatch.setattr(ConversionServer, "run", hang)
    conv_onnx = export_onnx(torch.nn.Conv2d(3, 1, 3, padding=1).eval(), tmp_path / "c.onnx", 16, 16)
    with pytest.raises(ExportError, match="did not finish within 7 s"):
        convert_to_tflite(conv_onnx, tmp_path / "c.tflite", np.zeros((20, 128, 128, 3), np.float32), timeout_s=7)


def test_a_wedged_server_fails_only_its_conversion_within_the_deadline(tmp_path):
    """Issue #27 item 6: the server (not its child) is SIGSTOPped during a job. The parent's own deadline
    (the job's timeout plus a margin) fails that conversion with the reason, kills the server and the
    child it forked, and the next conversion runs on a new server."""
    conv_onnx = export_onnx(torch.nn.Conv2d(3, 1, 3, padding=1).eval(), tmp_path / "c.onnx", 16, 16)
    sample = np.zeros((20, 128, 128, 3), np.float32)
    convert_to_tflite(conv_onnx, tmp_path / "warm.tflite", sample)  # the server has imported and answered
    server, starts = CONVERSIONS._process, CONVERSIONS.starts
    CONVERSIONS.reply_margin_s = 2.0
    try:
        def stop_the_server_once_its_child_runs() -> None:
            deadline = time.monotonic() + 10
            while not psutil.Process(server.pid).children() and time.monotonic() < deadline:
                time.sleep(0.01)
            server.send_signal(signal.SIGSTOP)

        stopper = threading.Thread(target=stop_the_server_once_its_child_runs, daemon=True)
        stopper.start()
        started = time.monotonic()
        with pytest.raises(ExportError) as info:
            convert_to_tflite(conv_onnx, tmp_path / "c.tflite", sample, timeout_s=3)
        took = time.monotonic() - started
        stopper.join(10)
    finally:
        CONVERSIONS.reply_margin_s = 120.0
        if server.poll() is None:
            server.send_signal(signal.SIGCONT)
    assert 5 <= took < 15, took
    msg = str(info.value)
    assert "did not finish within 3 s" in msg and "conversion server itself stopped answering" in msg
    assert server.poll() is not None  # killed (and reaped), not left stopped
    tflite = convert_to_tflite(conv_onnx, tmp_path / "d.tflite", sample)
    assert tflite.stat().st_size > 0
    assert CONVERSIONS.starts == starts + 1 and CONVERSIONS._process.poll() is None
