"""Hardware-aware architecture search for on-device depth estimation.

The command line is `nas` (or `python -m nas`), defined in `nas.cli`; README.md maps the modules.
"""

__version__ = "0.1.0"
