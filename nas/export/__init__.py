"""PyTorch -> ONNX -> TFLite, with a numerical parity check at each hop."""

from __future__ import annotations

from nas.arch import PRECISIONS
from nas.errors import StageError


class ExportError(StageError):
    """A model that could not be exported, converted, or that lost accuracy on the way."""


def check_precision(precision: str) -> str:
    """`precision` itself when it is one of PRECISIONS; ExportError naming the choices otherwise.

    Checked before any work starts, so a typo never costs a conversion.
    """
    if precision not in PRECISIONS:
        raise ExportError(f"unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    return precision


def check_close(got, expected, tolerance: float, rtol: float, what: str) -> float:
    """Max abs difference (metres); ExportError where |got - expected| > tolerance + rtol * |expected|.

    The relative part keeps float32 rounding on far depths (tens of metres) from failing a model
    whose near-range output matches to the millimetre.
    """
    import numpy as np

    diff = np.abs(np.asarray(got, np.float64) - np.asarray(expected, np.float64))
    err = float(np.max(diff))
    if not np.isfinite(err) or (diff > tolerance + rtol * np.abs(expected)).any():
        raise ExportError(f"{what} by up to {err:.3g} m (tolerance {tolerance:g} m + {rtol:g} × depth)")
    return err
