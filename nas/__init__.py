"""Hardware-aware architecture search for on-device depth estimation."""

__version__ = "0.1.0"
