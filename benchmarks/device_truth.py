"""Device truth (issue #29): what one burst figure at one thread count hides, on this machine.

The search divides by latency, so a figure that is not what the shipped model does on the device picks the
wrong winner. Four parts, each its own result file under benchmarks/results/device_truth/:

- `threads`: the thread curve (1 and 2 threads, best of 3 bursts, counts interleaved as the runner does) of
  the seed presets and the embedded default's best searched networks (the best trials of the newest
  search_quality result, and the searched GhostNet the other benchmarks use), untrained, at 640×480:
  how much a second thread buys, and how often the fastest count differs between networks;
- `sustained`: the same networks' burst figure against `--seconds` (default 60) of invokes without pause
  (`runner --sustained-s`): first against last stretch, the median over the whole run, temperature;
- `int8`: every preset exported at `--precision int8` (with its float32 twin, calibrated on rendered
  scenes), scored against ONNX; for the preset that loses most, where the error comes from
  (`nas.export.int8_drift`): the worst layers and the si-RMSE at 8 / 32 / 128 calibration scenes;
- `reference`: does a CPU shared with other processes show in the reference model's median (the model the
  pool's agreement checks time)? Reference models of three sizes timed alone and beside 1 and 5 CPU hogs,
  all pinned to one core;
- `pool`: a two-device pool on 127.0.0.1 (this machine as `kind: local`, and a real sshd as `kind: ssh`,
  each runner pinned to its own core), timing trial models with agreement checks every K measurements;
  part-way a CPU hog is pinned beside the ssh device: seconds until it is taken out of the pool, the
  window of figures flagged, measurements lost.

Usage: python benchmarks/device_truth.py {convert,threads,sustained,int8,reference,pool,all} [--quick] [--work DIR]
Converted files are kept in --work (default /tmp/nas-device-truth) and reused between parts and runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from common import REPO_ROOT, RESULTS, write_result
from helpers import SEARCHED_GHOSTNET_48X64, convert_variants, time_as_profiled, untrained_model
from nas.arch import Arch
from nas.hardware.backend import RUNNER_PATH, parse_runner_output, runner_args
from nas.hardware.profile import DeviceProfile
from nas.presets import PRESETS

NAME = "device_truth"
DEPLOY = (480, 640)  # height, width: the mission's deployment size
INT8_SIZE = (240, 320)  # the int8 part converts each preset three more times: a quarter of the pixels


def searched_networks() -> dict[str, Arch]:
    """The best trials of the newest search_quality result (the embedded default's search), and the
    searched GhostNet the latency benchmarks share."""
    found: dict[str, Arch] = {"searched-ghostnet-48x64": SEARCHED_GHOSTNET_48X64}
    files = sorted((RESULTS / "search_quality").glob("run*.json"))
    if files:
        arms = json.loads(files[-1].read_text()).get("arms", {})
        for arm, figures in sorted(arms.items()):
            best = (figures or {}).get("best_trial") or {}
            if isinstance(best.get("arch"), dict):
                found[f"searched-{arm}"] = Arch.from_dict(best["arch"])
    return found


def networks(quick: bool) -> dict[str, Arch]:
    """Presets and searched networks, float32 (the thread and sustained parts time the float graph)."""
    nets = {name: arch for name, arch in PRESETS.items()} | searched_networks()
    nets = {name: dataclasses.replace(arch, precision="fp32") for name, arch in nets.items()}
    if quick:  # one preset and one searched network
        keep = ["litedepth", "searched-ghostnet-48x64"]
        nets = {name: nets[name] for name in keep}
    return nets


def converted(work: Path, quick: bool) -> dict[str, Path]:
    """Every network as a 640×480 float32 `.tflite` (converted once, kept in `work`)."""
    nets = networks(quick)
    files, seconds = convert_variants({name: (lambda arch=arch: untrained_model(arch)) for name, arch in nets.items()},
                                      work / "fp32")
    if seconds:
        print(f"converted {len(seconds)} network(s) in {sum(seconds.values()):.0f} s", flush=True)
    return {name: files[name] for name in nets}


def profile(threads: int | tuple[int, ...], quick: bool) -> DeviceProfile:
    """The shipped local profile's timing (5 + 30 invokes, best of 3 bursts 1 s apart) at `threads`."""
    return DeviceProfile(name="local", kind="local", threads=threads, warmup=5, runs=10 if quick else 30,
                         repeats=3, repeat_gap_s=1.0, quiet_check_s=1.0)


def part_threads(work: Path, quick: bool) -> dict[str, Any]:
    files = converted(work, quick)
    rows = {}
    for name, path in files.items():
        out = time_as_profiled(str(path), profile((1, 2), quick))
        curve = {int(k): v for k, v in out["threads_curve"].items()}
        rows[name] = {"curve_ms": curve, "fastest": out["threads"], "two_vs_one": round(curve[1] / curve[2], 3),
                      "other_cpu_share": out.get("other_cpu_share")}
        print(f"{name:34s} 1 thread {curve[1]:8.2f} ms  2 threads {curve[2]:8.2f} ms  "
              f"x{rows[name]['two_vs_one']:.2f}  fastest {out['threads']}", flush=True)
    fastest = [row["fastest"] for row in rows.values()]
    summary = {"networks": len(rows), "fastest_1": fastest.count(1), "fastest_2": fastest.count(2),
               "fastest_differs": len(set(fastest)) > 1,
               "two_vs_one_range": [min(r["two_vs_one"] for r in rows.values()),
                                    max(r["two_vs_one"] for r in rows.values())]}
    return {"rows": rows, "summary": summary}


def part_sustained(work: Path, quick: bool, seconds: float) -> dict[str, Any]:
    files = converted(work, quick)
    rows = {}
    for name, path in files.items():
        out = time_as_profiled(str(path), profile(1, quick), sustained_s=seconds)
        held = out["sustained"]
        rows[name] = {"burst_median_ms": out["median_ms"], "sustained_median_ms": held["median_ms"],
                      "sustained_vs_burst": round(held["median_ms"] / out["median_ms"], 4),
                      "first_median_ms": held["first_median_ms"], "last_median_ms": held["last_median_ms"],
                      "slowdown": held["slowdown"], "invokes": held["invokes"], "stretch_s": held["stretch_s"],
                      "temperature_c": [s[1] for s in held["samples"][:1] + held["samples"][-1:]],
                      "throttled_end": held["throttled_end"]}
        print(f"{name:34s} burst {out['median_ms']:8.2f} ms  {seconds:g} s sustained {held['median_ms']:8.2f} ms "
              f"(x{rows[name]['sustained_vs_burst']:.3f}; first {held['first_median_ms']:.2f}, last "
              f"{held['last_median_ms']:.2f})", flush=True)
    ratios = [row["sustained_vs_burst"] for row in rows.values()]
    order_burst = sorted(rows, key=lambda n: rows[n]["burst_median_ms"])
    order_held = sorted(rows, key=lambda n: rows[n]["sustained_median_ms"])
    return {"seconds": seconds, "rows": rows,
            "summary": {"sustained_vs_burst_range": [min(ratios), max(ratios)],
                        "median_sustained_vs_burst": round(statistics.median(ratios), 4),
                        "same_order": order_burst == order_held}}


def part_int8(work: Path, quick: bool) -> dict[str, Any]:
    from nas.export.int8_drift import export_drift
    from nas.export.pipeline import export_arch

    height, width = INT8_SIZE
    names = ["litedepth", "fastdepth"] if quick else list(PRESETS)
    gaps: dict[str, dict[str, Any]] = {}
    reports: dict[str, dict[str, Any]] = {}
    for name in names:
        folder = work / "int8" / name
        started = time.perf_counter()
        report = export_arch(dataclasses.replace(PRESETS[name], precision="int8"), folder, height, width,
                             precision="int8")
        # Margin below zero: always located; no calibration sizes yet (three conversions each).
        drift = export_drift(report, height, width, margin=-1.0, sizes=())
        reports[name] = report
        gaps[name] = {"si_rmse_int8": drift["si_rmse_int8"], "si_rmse_fp32": drift["si_rmse_fp32"],
                      "gap": drift["gap"], "worst_layer": drift["worst"][0] if drift["worst"] else None,
                      "seconds": round(time.perf_counter() - started, 1)}
        print(f"{name:20s} int8 si-RMSE against ONNX {drift['si_rmse_int8']:.4f} (float32 twin "
              f"{drift['si_rmse_fp32']:.4f})", flush=True)
    worst = max(gaps, key=lambda n: gaps[n]["gap"])
    located = export_drift(reports[worst], height, width, margin=-1.0)
    print(f"largest int8 loss: {worst}; calibration curve "
          + ", ".join(f"{p['images']}: {p['si_rmse']:.4f}" for p in located["calibration"]), flush=True)
    located.pop("layers")  # every layer: kept out of the result (the worst ones stay)
    return {"size": f"{width}x{height}", "presets": gaps, "worst_preset": worst, "located": located}


def hogs_on(cpu: int, count: int) -> list[subprocess.Popen]:
    """`count` busy loops pinned to `cpu`, returned once each has used CPU time (they spin, not just exist)."""
    hogs = [subprocess.Popen(["taskset", "-c", str(cpu), sys.executable, "-c", "while True: pass"])
            for _ in range(count)]
    deadline = time.monotonic() + 30
    while not all(sum(psutil.Process(h.pid).cpu_times()[:2]) > 0.2 for h in hogs):
        if time.monotonic() > deadline:
            raise RuntimeError("the CPU hogs never started spinning")
        time.sleep(0.05)
    return hogs


def stop(hogs: list[subprocess.Popen]) -> None:
    for hog in hogs:
        hog.kill()
        hog.wait()


def time_pinned(path: Path, cpu: int, quick: bool) -> float:
    """The model's median on `cpu` alone, with the shipped local profile's timing (runner pinned by taskset)."""
    argv = ["taskset", "-c", str(cpu), sys.executable, str(RUNNER_PATH),
            *runner_args(profile(1, quick), str(path))]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    return parse_runner_output("local", "timed run", done.returncode, done.stdout, done.stderr)["median_ms"]


def part_reference(work: Path, quick: bool) -> dict[str, Any]:
    """Does a CPU shared with other processes show in the reference model's median? By reference size."""
    from nas.hardware.reference import REFERENCE_SIZE, build_reference_model

    sizes = [(96, 128, 16), (192, 256, 32), REFERENCE_SIZE]
    rows = {}
    for height, width, channels in sizes:
        path = work / "reference" / f"{height}x{width}x{channels}.tflite"
        if not path.exists():
            build_reference_model(path, height, width, channels)
        row = {"alone_ms": time_pinned(path, 1, quick)}
        for count in (1, 5):
            hogs = hogs_on(1, count)
            try:
                row[f"beside_{count}_hogs_ms"] = time_pinned(path, 1, quick)
            finally:
                stop(hogs)
        row["slowdown_1_hog"] = round(row["beside_1_hogs_ms"] / row["alone_ms"], 3)
        row["slowdown_5_hogs"] = round(row["beside_5_hogs_ms"] / row["alone_ms"], 3)
        rows[f"{height}x{width}x{channels}"] = row
        print(f"reference {height}x{width}x{channels}: alone {row['alone_ms']:.3f} ms, beside 1 hog "
              f"{row['beside_1_hogs_ms']:.3f} ms (x{row['slowdown_1_hog']:.2f}), beside 5 "
              f"{row['beside_5_hogs_ms']:.3f} ms (x{row['slowdown_5_hogs']:.2f})", flush=True)
    return {"rows": rows, "product_reference": "x".join(map(str, REFERENCE_SIZE))}


def tests_devices() -> Any:
    """The tests' real sshd and device profiles (tests/helpers/devices.py), loaded under another name: this
    folder has a `helpers` module of its own."""
    spec = importlib.util.spec_from_file_location("tests_helpers_devices", REPO_ROOT / "tests" / "helpers" / "devices.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


def part_pool(work: Path, quick: bool) -> dict[str, Any]:
    """A two-device pool on 127.0.0.1: this machine (runner pinned to CPU 0) and a real sshd (runner pinned to
    CPU 1); the trial models are timed in turn with agreement checks every 2 measurements, and after the
    third a CPU hog is pinned beside the SSH device."""
    devices_helper = tests_devices()
    local_device, running_sshd, ssh_device = (devices_helper.local_device, devices_helper.running_sshd,
                                              devices_helper.ssh_device)
    wrapper_python, write_profile = devices_helper.wrapper_python, devices_helper.write_profile
    from nas.hardware import LatencyMeter, load_hardware
    from nas.hardware.agreement import read_agreement
    from nas.hardware.backend import MeasurementError

    files = list(converted(work, quick).values())
    measurements = 6 if quick else 12
    hog_after = 3
    # Production timing (5 + 30 invokes, best of 3 bursts); the contended-CPU guard is off on both devices:
    # it would catch the hog first (its job), and this measures the agreement check alone.
    timing = {"warmup": 5, "runs": 10 if quick else 30, "repeats": 3, "repeat_gap_s": 1.0, "quiet_check_s": 0,
              "unhealthy_s": 600, "measure_timeout_s": 300}
    scratch = Path(tempfile.mkdtemp(prefix="nas-pool-"))
    events: list[tuple[float, str]] = []
    rows: list[dict[str, Any]] = []
    hogs: list[subprocess.Popen] = []
    lost = 0
    try:
        (scratch / "sshd").mkdir()
        with running_sshd(scratch / "sshd") as sshd:
            ssh = ssh_device(sshd, scratch, python=wrapper_python(scratch / "py1", 'exec taskset -c 1 "$PY" "$@"'),
                             name="pi-ssh", **timing)
            local = local_device(python=wrapper_python(scratch / "py0", 'exec taskset -c 0 "$PY" "$@"'),
                                 name="pi-local", **timing)
            devices = load_hardware(write_profile(scratch / "pool.yaml", {"devices": [ssh, local]}))
            started = time.monotonic()
            note = lambda msg: events.append((round(time.monotonic() - started, 2), msg))  # noqa: E731
            hog_at = None
            with LatencyMeter(devices, f"sqlite:///{scratch / 'pool.db'}", scratch / "results", holder="bench",
                              use_cache=False, reference_every=2, reference_tolerance=0.10) as meter:
                for index in range(measurements):
                    if index == hog_after:
                        hogs = hogs_on(1, 1)
                        hog_at = round(time.monotonic() - started, 2)
                        note("hog pinned beside pi-ssh (CPU 1)")
                    path = files[index % len(files)]
                    try:
                        result = meter.measure(path, note)
                        rows.append({"at_s": round(time.monotonic() - started, 2), "model": path.parent.name,
                                     "device": result.device, "median_ms": result.median_ms,
                                     "measure_start": result.measure_start})
                    except MeasurementError as exc:
                        lost += 1
                        note(f"lost: {exc}")
                figures, windows = read_agreement(meter.engine)
    finally:
        stop(hogs)
    out_at = next((at for at, msg in events if msg.startswith("pi-ssh taken out of the pool")), None)
    flagged = [r for r in rows if any(w.covers(r["device"], r["measure_start"]) for w in windows)]
    for row in rows:
        row["flagged"] = row in flagged
    summary = {"hog_at_s": hog_at, "taken_out_at_s": out_at,
               "seconds_until_taken_out": None if out_at is None or hog_at is None else round(out_at - hog_at, 2),
               "measurements": len(rows), "lost": lost, "flagged": len(flagged),
               "after_hog_on": sorted({r["device"] for r in rows[hog_after + 1:]}),
               "reference_figures": [{"device": f.name, "median_ms": round(f.median_ms, 4), "verdict": f.verdict,
                                      "reason": f.reason} for f in figures],
               "windows": [w.__dict__ for w in windows]}
    print(json.dumps(summary, indent=2), flush=True)
    return {"summary": summary, "measurements": rows, "events": events}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("part", choices=["convert", "threads", "sustained", "int8", "reference", "pool", "all"],
                        help="convert: only convert the networks (minutes, CPU-bound: before the timed parts)")
    parser.add_argument("--quick", action="store_true", help="two networks, fewer invokes: a smoke run")
    parser.add_argument("--seconds", type=float, default=None, help="sustained load per network (default 60; "
                                                                     "--quick 5)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/nas-device-truth"))
    args = parser.parse_args()
    parts = ["threads", "sustained", "int8", "reference", "pool"] if args.part == "all" else [args.part]
    suffix = "-quick" if args.quick else ""
    if args.part == "convert":
        converted(args.work, args.quick)
        return 0
    for part in parts:
        started = time.perf_counter()
        if part == "threads":
            figures = part_threads(args.work, args.quick)
        elif part == "sustained":
            figures = part_sustained(args.work, args.quick, args.seconds or (5.0 if args.quick else 60.0))
        elif part == "int8":
            figures = part_int8(args.work, args.quick)
        elif part == "reference":
            figures = part_reference(args.work, args.quick)
        else:
            figures = part_pool(args.work, args.quick)
        figures["wall_s"] = round(time.perf_counter() - started, 1)
        path = write_result(NAME, figures, f"{part}{suffix}")
        print(f"{part}: {path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
