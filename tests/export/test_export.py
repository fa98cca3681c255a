"""ONNX and TFLite parity on a tiny model, and the offline conversion contract."""

import os
import sys

import numpy as np
import pytest
from helpers.export import TINY

from nas.export import ExportError
from nas.export.onnx_export import export_onnx, run_onnx
from nas.export.pipeline import export_arch
from nas.export.tflite_convert import TFLiteModel, convert_to_tflite


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    # 100×140 does not halve evenly: 50×70 internal -> 25×35 -> 13×18 -> 7×9
    return export_arch(TINY, out, height=100, width=140, tolerance=1e-3)


def test_tiny_model_converts_and_matches(exported):
    assert exported["precision"] == "fp32" and "tflite_fp32" not in exported
    assert exported["max_abs_err_onnx_vs_torch_m"] < 1e-3
    assert exported["max_abs_err_tflite_vs_onnx_m"] < 1e-3
    assert exported["tflite_bytes"] > 10_000
    model = TFLiteModel(exported["tflite"])
    assert model.input_hw == (100, 140)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (100, 140, 3)).astype(np.uint8)
    depth = model.predict(image)
    assert depth.shape == (100, 140) and np.isfinite(depth).all() and (depth > 0).all()
    # the parity check is not trivial: the output varies over the image
    assert depth.std() > 1e-4
    onnx_depth = run_onnx(exported["onnx"], image.transpose(2, 0, 1)[None].astype(np.float32))[0]
    assert np.max(np.abs(onnx_depth - depth)) < 1e-3
    # 50×70 inside, 100×140 out: the depth is upsampled by a convolution and a depth-to-space (graph v4), in ops
    # that XNNPACK takes (no MIRROR_PAD, which it does not), not by a final RESIZE_BILINEAR.
    from ai_edge_litert.interpreter import Interpreter

    ops = [op["op_name"] for op in Interpreter(model_path=str(exported["tflite"]))._get_ops_details()]
    assert "MIRROR_PAD" not in ops and ops[-1] != "RESIZE_BILINEAR" and "CONCATENATION" in ops[-8:]
    # the depth-to-space is TFLite's own (graph v5), not onnx2tf's reshape + transpose + reshape for CRD order
    assert ops[-1] == "DEPTH_TO_SPACE" and "TRANSPOSE" not in ops[-4:]


def test_conversion_failure_is_an_export_error(tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"this is not an onnx model")
    with pytest.raises(ExportError, match="onnx2tf failed"):
        convert_to_tflite(broken, tmp_path / "out.tflite", np.zeros((20, 128, 128, 3), np.float32))


def test_a_conversion_child_that_dies_of_a_signal_is_an_export_error_naming_it(tmp_path, monkeypatch):
    """LiteRT may abort (not raise) on a model it cannot take; the child that tries the model first dies,
    and the trial fails with the reason instead of the study's process."""
    dying = tmp_path / "bin" / "python"
    dying.parent.mkdir()
    dying.write_text("#!/bin/sh\nkill -ABRT $$\n")
    dying.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(dying))  # the conversion server and a fresh child alike
    (tmp_path / "any.onnx").write_bytes(b"the child dies before reading it")
    with pytest.raises(ExportError, match="onnx2tf failed \\(the conversion child died of SIGABRT\\)"):
        convert_to_tflite(tmp_path / "any.onnx", tmp_path / "out.tflite", np.zeros((20, 128, 128, 3), np.float32))


def test_export_writes_single_self_contained_onnx(tmp_path):
    import torch

    from nas.models import DepthNet

    path = export_onnx(DepthNet(TINY), tmp_path / "m.onnx", 64, 96)
    assert path.exists() and not list(tmp_path.glob("*.data"))
    out = run_onnx(path, np.zeros((1, 3, 64, 96), np.float32))
    assert out.shape == (1, 64, 96)
    del torch


def test_pixel_shuffles_after_a_convolution_export_in_dcr_order_with_the_same_output(tmp_path):
    """TFLite's own DEPTH_TO_SPACE is DCR; PyTorch exports CRD. The convolution's channels are reordered instead,
    so ONNX gives what PyTorch gives; a grouped convolution's channels belong to its groups and stay as they are."""
    import onnx
    import torch
    import torch.nn.functional as F

    class Shuffles(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.plain = torch.nn.Conv2d(3, 3 * 4, 3, padding=1)  # 3 channels out of each ×2 shuffle
            self.grouped = torch.nn.Conv2d(3, 3 * 4, 1, groups=3)
            self.register_buffer("weights", torch.tensor([1.0, 10.0, 100.0]).view(1, 3, 1, 1))  # tells channels apart

        def forward(self, x):
            shuffled = F.pixel_shuffle(self.plain(x), 2) + 0.5 * F.pixel_shuffle(self.grouped(x), 2)
            return (shuffled * self.weights).sum(1, keepdim=True)

    torch.manual_seed(0)
    model = Shuffles().eval()
    path = export_onnx(model, tmp_path / "m.onnx", 8, 10)
    modes = [a.s for n in onnx.load(str(path)).graph.node if n.op_type == "DepthToSpace"
             for a in n.attribute if a.name == "mode"]
    assert sorted(modes) == [b"CRD", b"DCR"]  # the grouped one left as it was
    image = np.random.default_rng(0).uniform(0, 255, (1, 3, 8, 10)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(image)).numpy()[:, 0]
    assert np.abs(run_onnx(path, image) - expected).max() < 1e-3 * np.abs(expected).max()


def test_softplus_head_survives_conversion_at_large_values(tmp_path):
    """Converters write softplus as log(exp(y) + 1), inf past y = 88; our head must not."""
    import torch

    from nas.models.head import DepthHead

    head = DepthHead(1, "softplus", 40.0).eval()
    with torch.no_grad():
        head.conv.weight.zero_()
        head.conv.weight[0, 0, 1, 1] = 1.0
        head.conv.bias.zero_()

    class Wrap(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.head = head

        def forward(self, x):
            return self.head(x[:, :1] - 128.0)  # pre-activation from -128 to 127

    onnx_path = export_onnx(Wrap(), tmp_path / "h.onnx", 16, 16)
    tflite = convert_to_tflite(onnx_path, tmp_path / "h.tflite", np.zeros((20, 128, 128, 3), np.float32))
    image = np.linspace(0, 255, 16 * 16 * 3).reshape(16, 16, 3).astype(np.float32)
    got = TFLiteModel(tflite).predict(image)
    expected = run_onnx(onnx_path, image.transpose(2, 0, 1)[None])[0]
    assert np.isfinite(got).all() and got.max() > 100
    assert np.max(np.abs(got - expected)) < 1e-3


def test_parity_tolerance_is_absolute_plus_relative_to_depth():
    from nas.export import check_close

    far = np.array([40.0, 1.0])
    assert check_close(far + [2.6e-3, 0.0], far, 1e-3, 1e-4, "x") == pytest.approx(2.6e-3)  # 2.6 mm at 40 m
    with pytest.raises(ExportError, match="up to 0.0026"):
        check_close(far + [0.0, 2.6e-3], far, 1e-3, 1e-4, "x")  # 2.6 mm at 1 m
    with pytest.raises(ExportError):
        check_close(np.array([np.nan, 1.0]), far, 1e-3, 1e-4, "x")


def test_the_conversion_child_simplifies_the_graph_itself_to_a_fixed_point(tmp_path):
    """onnx2tf's own simplification starts the `onnxsim` executable three times (seconds each); the child runs
    the same simplifier in process until nothing changes, folding what onnxsim folds, without changing the
    output."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from nas.export.onnx2tf_job import simplify

    two = helper.make_tensor("two", TensorProto.FLOAT, [1], [2.0])
    three = helper.make_tensor("three", TensorProto.FLOAT, [1], [3.0])
    graph = helper.make_graph(
        [helper.make_node("Add", ["two", "three"], ["five"]), helper.make_node("Mul", ["x", "five"], ["y"])],
        "foldable", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])], initializer=[two, three])
    path = tmp_path / "foldable.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    x = np.arange(48, dtype=np.float32).reshape(1, 3, 4, 4)

    assert simplify(str(path)) >= 1
    assert [node.op_type for node in onnx.load(path).graph.node] == ["Mul"]  # 2 + 3 folded into a constant
    (y,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(["y"], {"x": x})
    np.testing.assert_allclose(y, 5 * x)
    assert simplify(str(path)) == 0  # a fixed point: another pass changes nothing


def test_a_simplifier_crash_converts_again_with_onnx2tfs_own_simplifier(tmp_path, monkeypatch):
    """onnxsim's C++ core can abort the process it runs in; onnx2tf runs it as a separate program and goes on
    without it, so a candidate that crashes the in-process simplifier is converted all the same."""
    import torch

    fake = tmp_path / "fake" / "onnxsim"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("import os\n\ndef simplify(*args, **kwargs):\n    os.abort()\n\n"
                                      "def main():\n    os.abort()\n")
    monkeypatch.setenv("PYTHONPATH", f"{fake.parent}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")

    conv = torch.nn.Conv2d(3, 1, 3, padding=1).eval()
    onnx_path = export_onnx(conv, tmp_path / "c.onnx", 16, 16)
    log = tmp_path / "onnx2tf.log"
    tflite = convert_to_tflite(onnx_path, tmp_path / "c.tflite", np.zeros((20, 128, 128, 3), np.float32),
                               log_path=log)
    assert log.read_text().startswith("the in-process simplifier crashed the conversion child (SIGABRT); "
                                      "converted again with onnx2tf's own simplifier")
    image = np.linspace(0, 255, 16 * 16 * 3).reshape(16, 16, 3).astype(np.float32)
    expected = run_onnx(onnx_path, image.transpose(2, 0, 1)[None])[0]
    assert np.max(np.abs(TFLiteModel(tflite).predict(image) - expected)) < 1e-3


def test_a_conversion_onto_a_full_disk_keeps_the_previous_model_whole(tmp_path, tiny_model):
    """A real 256 kB file system holds a good model.tflite; a new model of about 600 kB cannot fit: the old
    file stays, byte for byte and loadable, no temporary is left, and the error names the folder."""
    import shutil

    import torch
    from helpers.disk import small_disk

    from nas.errors import NasRuntimeError

    big = torch.nn.Sequential(torch.nn.Conv2d(3, 128, 3, padding=1), torch.nn.Conv2d(128, 128, 3, padding=1),
                              torch.nn.Conv2d(128, 1, 1))
    onnx_path = export_onnx(big, tmp_path / "big.onnx", 16, 16)
    with small_disk(tmp_path / "out", "256k") as out:
        good = out / "model.tflite"
        shutil.copyfile(tiny_model, good)
        before = good.read_bytes()
        with pytest.raises(NasRuntimeError, match=r"writing model\.tflite needs 6\d\d\.\d kB, only .* free") as caught:
            convert_to_tflite(onnx_path, good, np.zeros((20, 128, 128, 3), np.float32))
        assert caught.value.path == out
        assert good.read_bytes() == before and TFLiteModel(good).input_hw == (16, 16)
        assert sorted(p.name for p in out.iterdir()) == ["model.tflite"]


def test_a_release_that_cannot_fit_leaves_the_previous_release_whole(tmp_path):
    """`nas finalize` builds its folder beside --out and swaps it in: a full disk midway keeps the old one."""
    from helpers.disk import small_disk

    from nas.errors import NasRuntimeError
    from nas.infra.files import atomic_write_bytes, staged_folder

    with small_disk(tmp_path / "disk", "256k") as disk:
        release = disk / "release"
        with staged_folder(release) as out:
            atomic_write_bytes(out / "model.tflite", b"old" * 10_000)
        with pytest.raises(NasRuntimeError, match=r"writing model\.pt needs 300\.0 kB") as caught:
            with staged_folder(release) as out:
                atomic_write_bytes(out / "metrics.json", b"{}")
                atomic_write_bytes(out / "model.pt", bytes(300_000))  # does not fit
        assert caught.value.path.name.startswith(".release.")  # the folder it was written in, beside --out
        assert sorted(p.name for p in disk.iterdir()) == ["release"]
        assert sorted(p.name for p in release.iterdir()) == ["model.tflite"]
        assert (release / "model.tflite").read_bytes() == b"old" * 10_000
        with staged_folder(release) as out:  # a release that fits replaces the old one as a whole
            atomic_write_bytes(out / "metrics.json", b"{}")
        assert sorted(p.name for p in release.iterdir()) == ["metrics.json"]
