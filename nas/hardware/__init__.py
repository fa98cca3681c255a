"""Latency measurement on target devices: profiles, local and SSH backends, leases, cache.

The search calls only this:

    devices = load_hardware(path)
    meter = LatencyMeter(devices, storage_url, results_dir)
    result = meter.measure(tflite_path, progress)   # LatencyResult, or MeasurementError

Every backend runs the same `hardware/runner.py`, so a figure means the same thing everywhere.
"""

from nas.hardware.local import MeasurementError
from nas.hardware.meter import LatencyMeter, LatencyResult
from nas.hardware.profile import DeviceProfile, load_hardware

__all__ = ["DeviceProfile", "LatencyMeter", "LatencyResult", "MeasurementError", "load_hardware"]
