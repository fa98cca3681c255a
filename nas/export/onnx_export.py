"""PyTorch -> ONNX with static shapes at deployment resolution, checked with onnxruntime.

The exported graph is PyTorch's, except that pixel shuffles are rewritten to the channel order TFLite's own
DEPTH_TO_SPACE uses (`depth_to_space_as_dcr`): the same outputs in fewer, faster ops after onnx2tf.
"""

from __future__ import annotations

import io
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import numpy_helper

from nas.export import check_close
from nas.infra.files import atomic_write_bytes

INPUT_NAME, OUTPUT_NAME = "image", "depth"
OPSET = 17


def export_onnx(model: torch.nn.Module, path: Path, height: int, width: int) -> Path:
    """Write one self-contained ONNX file (the TorchScript exporter: no side `.onnx.data` file)."""
    model = model.eval().cpu()
    dummy = torch.zeros(1, 3, height, width)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about Python ints: intended, sizes are static
        torch.onnx.export(model, (dummy,), buffer, dynamo=False, opset_version=OPSET,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], do_constant_folding=True)
    graph = onnx.load_from_string(buffer.getvalue())
    depth_to_space_as_dcr(graph)
    atomic_write_bytes(path, graph.SerializeToString())  # a full disk leaves no half model behind
    return path


def depth_to_space_as_dcr(model: onnx.ModelProto) -> int:
    """Rewrite each DepthToSpace fed by a convolution from PyTorch's CRD channel order to DCR; how many were.

    `pixel_shuffle` exports as DepthToSpace in CRD mode, which onnx2tf lowers to reshape, transpose and
    reshape; in DCR mode it becomes TFLite's own DEPTH_TO_SPACE. Reordering the convolution's output
    channels (weights and bias, constants of the graph) from CRD to DCR keeps every output value the same.
    A DepthToSpace whose input is not an ungrouped convolution with constant weights used nowhere else is
    left as it is.
    """
    graph = model.graph
    constants = {init.name: init for init in graph.initializer}
    for node in graph.node:  # constants the exporter wrote as Constant nodes (e.g. a kernel built in forward)
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            constants[node.output[0]] = node.attribute[0].t
    producers = {out: node for node in graph.node for out in node.output}
    uses = Counter(name for node in graph.node for name in node.input)
    rewritten = 0
    for node in graph.node:
        mode = next((a for a in node.attribute if a.name == "mode"), None)
        if node.op_type != "DepthToSpace" or mode is None or mode.s != b"CRD":
            continue
        conv = producers.get(node.input[0])
        if conv is None or conv.op_type != "Conv" or uses.get(node.input[0]) != 1:
            continue
        params = [name for name in conv.input[1:] if name]
        if any(a.name == "group" and a.i != 1 for a in conv.attribute) or not all(
                name in constants and uses.get(name) == 1 for name in params):
            continue
        block = next(a.i for a in node.attribute if a.name == "blocksize")
        for name in params:  # weight (O, I, kH, kW), bias (O,): O = C·r² in CRD order -> r²·C in DCR order
            array = numpy_helper.to_array(constants[name])
            channels = array.shape[0] // (block * block)
            reordered = array.reshape(channels, block * block, *array.shape[1:]).swapaxes(0, 1)
            constants[name].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(reordered).reshape(array.shape),
                                                             constants[name].name))
        mode.s = b"DCR"
        rewritten += 1
    return rewritten


def run_onnx(path: Path, image_nchw: np.ndarray) -> np.ndarray:
    """Depth (N, H, W) from the ONNX model for float32 NCHW 0..255 input."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run([OUTPUT_NAME], {INPUT_NAME: image_nchw.astype(np.float32)})
    return out[:, 0]


def check_onnx_parity(model: torch.nn.Module, path: Path, image_nchw: np.ndarray, tolerance: float,
                      rtol: float = 1e-4) -> float:
    """Max abs depth difference (metres) between PyTorch and ONNX; ExportError beyond the tolerance."""
    with torch.no_grad():
        expected = model.eval().cpu()(torch.from_numpy(image_nchw.astype(np.float32))).numpy()[:, 0]
    return check_close(run_onnx(path, image_nchw), expected, tolerance, rtol, "ONNX output differs from PyTorch")
