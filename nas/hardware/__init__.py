"""Latency measurement on target devices: profiles, backends (local, SSH), leases, cache.

The search calls only this:

    devices = load_hardware(path)
    meter = LatencyMeter(devices, storage_url, results_dir)
    meter.check_usable()                             # before training: MeasurementError if none
    result = meter.measure(tflite_path, progress)   # LatencyResult, or MeasurementError

Every backend runs the same `hardware/runner.py`, so a figure means the same thing everywhere;
`nas.hardware.backend` holds the contract a new kind of device implements.
"""

from nas.hardware.backend import DeviceError, MeasurementError
from nas.hardware.meter import LatencyMeter, LatencyResult
from nas.hardware.profile import DeviceProfile, load_hardware

__all__ = ["DeviceError", "DeviceProfile", "LatencyMeter", "LatencyResult", "MeasurementError",
           "load_hardware"]
