"""Seed presets at 640×480: params, MACs, TFLite size, local latency (runner median), conversion time.

Usage: python benchmarks/presets.py [--hardware hardware/local.yaml] [--out FILE]
Writes benchmarks/results/presets/<date>.json (or --out), the Markdown table for benchmarks/presets.md
included, and prints the table.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from nas.export.pipeline import export_arch
from nas.hardware import LatencyMeter, load_hardware
from nas.presets import PRESETS

from common import results_path, write_result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hardware", type=Path, default=Path("hardware/local.yaml"))
    parser.add_argument("--out", type=Path, default=None,
                        help="result file (default: benchmarks/results/presets/<UTC date and time>.json)")
    args = parser.parse_args()
    out = args.out or results_path("presets")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        meter = LatencyMeter(load_hardware(args.hardware), f"sqlite:///{tmp}/bench.db", Path(tmp))
        for name, arch in PRESETS.items():
            report = export_arch(arch, Path(tmp) / name)
            latency = meter.measure(Path(report["tflite"]))
            rows.append({"preset": name, "backbone": arch.backbone, "params": report["params"],
                         "macs": report["macs"], "tflite_bytes": report["tflite_bytes"],
                         "latency_median_ms": latency.median_ms, "latency_p90_ms": latency.p90_ms,
                         "device": latency.device, "threads": latency.threads,
                         "convert_seconds": report["convert_seconds"],
                         "parity_tflite_vs_onnx_m": report["max_abs_err_tflite_vs_onnx_m"]})
    table = Table(title="MAI 2021 seed presets at 640×480")
    for col in ("preset", "params", "MMACs", "TFLite MB", "median ms", "p90 ms", "convert s", "parity m"):
        table.add_column(col, justify="right")
    lines = ["| preset | params | MMACs | TFLite MB | median ms | p90 ms | convert s | parity m |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cells = [r["preset"], f"{r['params']:,}", f"{r['macs'] / 1e6:,.0f}", f"{r['tflite_bytes'] / 1e6:.2f}",
                 f"{r['latency_median_ms']:.1f}", f"{r['latency_p90_ms']:.1f}", f"{r['convert_seconds']:.0f}",
                 f"{r['parity_tflite_vs_onnx_m']:.1e}"]
        table.add_row(*cells)
        lines.append("| " + " | ".join(cells) + " |")
    write_result("presets", {"hardware": str(args.hardware), "rows": rows, "table": "\n".join(lines)}, path=out)
    Console().print(table)


if __name__ == "__main__":
    main()
