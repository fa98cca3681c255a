"""PyTorch -> ONNX -> TFLite, with a numerical parity check at each hop."""

from __future__ import annotations


class ExportError(RuntimeError):
    """A model that could not be exported, converted, or that lost accuracy on the way."""
