#!/usr/bin/env python3
"""Time one .tflite model (float32 or quantized) with LiteRT and print ONE JSON object on stdout.

This single file is what runs on every device (this machine through a subprocess, a Raspberry Pi
through SSH), so a latency figure means the same thing wherever it was taken. It must stay
self-contained (standard library, numpy, ai_edge_litert or tflite_runtime) and run on Python 3.9+.

    python3 runner.py --model M.tflite --threads 4 --warmup 5 --runs 30 [--repeats 3 --repeat-gap-s 1]
                      [--max-temp-c 75] [--lock F] [--sysfs-root /sys]
    python3 runner.py --model M.tflite --threads 1,2,4 [--threads-fixed 4] ...
    python3 runner.py --probe

With --repeats R the model is timed in R bursts (each `warmup` untimed + `runs` timed invokes), --repeat-gap-s
apart, and the figures are those of the burst with the lowest median: a burst that other work on the machine
slowed (a neighbour on a shared host, a background job) is set aside instead of becoming the model's latency.
Every burst's median is reported too (`repeat_medians_ms`).

With several thread counts (--threads 1,2,4) the model is loaded once per count and the bursts go round
the counts (burst 1 at every count, then burst 2, ...), --repeat-gap-s apart, so a slow stretch of the
machine does not fall on one count only. `threads_curve` maps each count to its fastest burst's median; the top-level figures
and `threads` are those of the fastest count, or of --threads-fixed when given.

Every output carries the CPU frequency governor of cpu0 and its current and maximum clock (kHz), read
from sysfs (--sysfs-root, else $NAS_RUNNER_SYSFS_ROOT, else /sys): "unknown" / null where the files are
missing (containers, VMs). A timed run reads the current clock again after timing.

Exit codes: 0 ok, 2 bad arguments or model, 3 no TFLite runtime, 4 too hot (--max-temp-c),
5 the interpreter failed, 6 busy: another runner holds the device's lock file (--lock), so two
timed runs never overlap on one device, whatever the callers' leases believe. On error the message goes to stderr; stdout still carries a JSON object
with the environment fields when they could be read, so the caller can say what it saw.
A timed run also reports the dtypes of the model's input and output tensors ("float32", "int8",
...; comma-separated where a model has several), so a figure says which precision it timed.
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import json
import os
import platform
import re
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

EXIT_BAD_INPUT = 2
EXIT_NO_RUNTIME = 3
EXIT_TOO_HOT = 4
EXIT_INVOKE_FAILED = 5
EXIT_BUSY = 6

# ARM "CPU part" ids seen on boards people use for this (for a readable `cpu` on a Pi).
_ARM_PARTS = {"0xd03": "Cortex-A53", "0xd04": "Cortex-A35", "0xd05": "Cortex-A55",
              "0xd07": "Cortex-A57", "0xd08": "Cortex-A72", "0xd09": "Cortex-A73",
              "0xd0a": "Cortex-A75", "0xd0b": "Cortex-A76", "0xd0d": "Cortex-A77"}


def load_runtime() -> Tuple[Optional[Callable[..., Any]], Optional[str], Optional[str]]:
    """Return (Interpreter class, runtime name, version); LiteRT first, then tflite_runtime."""
    try:
        import ai_edge_litert  # type: ignore
        from ai_edge_litert.interpreter import Interpreter  # type: ignore
        return Interpreter, "ai_edge_litert", _version(ai_edge_litert, "ai-edge-litert")
    except ImportError:
        pass
    try:
        import tflite_runtime  # type: ignore
        from tflite_runtime.interpreter import Interpreter  # type: ignore
        return Interpreter, "tflite_runtime", _version(tflite_runtime, "tflite-runtime")
    except ImportError:
        return None, None, None


def _version(module: Any, dist: str) -> Optional[str]:
    """The package version: the module attribute, else the installed distribution's metadata."""
    found = getattr(module, "__version__", None)
    if found:
        return str(found)
    try:
        from importlib.metadata import version
        return version(dist)
    except Exception:
        return None


def _vcgencmd(*args: str) -> Optional[str]:
    """Output of `vcgencmd ARGS` (Raspberry Pi firmware tool), None where it is missing."""
    try:
        done = subprocess.run(["vcgencmd"] + list(args), stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.decode("utf-8", "replace").strip()


def _sysfs(root: str, *parts: str) -> Optional[str]:
    """The stripped text of a sysfs file under `root`, None where it is missing or unreadable."""
    try:
        with open(os.path.join(root, *parts)) as handle:
            return handle.read().strip() or None
    except OSError:
        return None


def _sysfs_int(root: str, *parts: str) -> Optional[int]:
    text = _sysfs(root, *parts)
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


_CPUFREQ = ("devices", "system", "cpu", "cpu0", "cpufreq")


def read_cpufreq(root: str) -> Dict[str, Any]:
    """cpu0's frequency governor ("unknown" without cpufreq) and its current and maximum clock in kHz.

    A governor other than `performance` lets the clock follow the load, so a short timed run may
    start at a low clock: the figure then depends on what ran just before.
    """
    return {"cpu_governor": _sysfs(root, *_CPUFREQ, "scaling_governor") or "unknown",
            "cpu_cur_freq_khz": _sysfs_int(root, *_CPUFREQ, "scaling_cur_freq"),
            "cpu_max_freq_khz": _sysfs_int(root, *_CPUFREQ, "cpuinfo_max_freq")}


def read_temperature(root: str = "/sys") -> Optional[float]:
    """SoC temperature in °C, from vcgencmd or the first thermal zone; None if unreadable."""
    out = _vcgencmd("measure_temp")
    if out:
        match = re.search(r"(-?\d+(?:\.\d+)?)", out)
        if match:
            return float(match.group(1))
    raw = _sysfs_int(root, "class", "thermal", "thermal_zone0", "temp")
    return None if raw is None else round(raw / 1000.0, 1)


def read_throttled() -> Optional[str]:
    """`vcgencmd get_throttled` as a hex string (e.g. "0x50000"), None where unavailable."""
    out = _vcgencmd("get_throttled")
    if not out:
        return None
    match = re.search(r"0x[0-9a-fA-F]+", out)
    return match.group(0).lower() if match else None


def busy_cpu_seconds() -> Optional[float]:
    """CPU seconds all cores have spent busy since boot (/proc/stat), None where unavailable."""
    try:
        with open("/proc/stat") as handle:
            fields = handle.readline().split()
        ticks = [int(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
    except (OSError, ValueError):
        return None
    if fields[0] != "cpu" or len(ticks) < 5:
        return None
    return (sum(ticks) - ticks[3] - ticks[4]) / float(os.sysconf("SC_CLK_TCK"))


def other_cpu_share(window_s: float) -> Optional[float]:
    """Share of all cores that other processes kept busy over `window_s` seconds of this one idling.

    Timing on a machine where something else runs (another worker training, a test suite) gives
    figures that are too slow; the meter uses this to re-time or flag them. None without /proc/stat.
    """
    before, own_before, start = busy_cpu_seconds(), sum(os.times()[:2]), time.perf_counter()
    if before is None or window_s <= 0:
        return None
    time.sleep(window_s)
    after, own_after, wall = busy_cpu_seconds(), sum(os.times()[:2]), time.perf_counter() - start
    if after is None:
        return None
    others = max(0.0, (after - before) - (own_after - own_before))
    return round(min(1.0, others / (wall * (os.cpu_count() or 1))), 3)


def read_cpu() -> str:
    """A readable CPU name: x86 "model name", or the Pi's board model plus its ARM core."""
    fields = {}  # type: Dict[str, str]
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                key, sep, value = line.partition(":")
                key = key.strip()
                if sep and key and key not in fields:
                    fields[key] = value.strip()
    except OSError:
        pass
    if fields.get("model name"):
        return fields["model name"]
    core = _ARM_PARTS.get(fields.get("CPU part", "").lower(), "")
    board = fields.get("Model", "")
    if board or core:
        return " ".join(p for p in (board, "(" + core + ")" if core else "") if p)
    return platform.processor() or platform.machine() or "unknown"


def environment(runtime: Optional[str], version: Optional[str], sysfs: str = "/sys") -> Dict[str, Any]:
    """The fields every output carries, model or not."""
    env = {
        "runtime": runtime,
        "runtime_version": version,
        "cpu": read_cpu(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "temperature_c": read_temperature(sysfs),
        "throttled": read_throttled(),
    }  # type: Dict[str, Any]
    env.update(read_cpufreq(sysfs))
    return env


def fill_inputs(interpreter: Any, np: Any) -> None:
    """Resize dynamic dimensions to 1 and fill every input with seeded random data of its dtype."""
    details = interpreter.get_input_details()
    resized = False
    for det in details:
        signature = det.get("shape_signature")
        if signature is not None and any(int(d) < 0 for d in signature):
            shape = [1 if int(d) < 0 else int(d) for d in signature]
            interpreter.resize_tensor_input(det["index"], shape)
            resized = True
    if resized:
        interpreter.allocate_tensors()
        details = interpreter.get_input_details()
    rng = np.random.default_rng(0)
    for det in details:
        shape = tuple(int(d) for d in det["shape"])
        dtype = np.dtype(det["dtype"])
        if dtype.kind == "f":
            data = rng.random(shape, dtype=np.float64).astype(dtype)
        elif dtype.kind in "iu":
            info = np.iinfo(dtype)
            data = rng.integers(max(info.min, -128), min(info.max, 127) + 1, size=shape).astype(dtype)
        elif dtype.kind == "b":
            data = rng.random(shape) < 0.5
        else:
            raise ValueError("input %r has unsupported dtype %s" % (det.get("name"), dtype))
        interpreter.set_tensor(det["index"], data)


def tensor_dtypes(details: List[Dict[str, Any]], np: Any) -> str:
    """The dtype names of the given tensors, comma-separated ("float32" for our depth models)."""
    return ",".join(np.dtype(det["dtype"]).name for det in details)


def time_bursts(interpreter: Any, warmup: int, runs: int, repeats: int, gap_s: float) -> List[List[float]]:
    """`repeats` bursts of `warmup` untimed and `runs` timed invokes, `gap_s` apart: ms per timed invoke."""
    return time_rounds([interpreter], warmup, runs, repeats, gap_s)[0]


def _burst(interpreter: Any, warmup: int, runs: int) -> List[float]:
    for _ in range(warmup):
        interpreter.invoke()
    times_ms = []  # type: List[float]
    for _ in range(runs):
        start = time.perf_counter()
        interpreter.invoke()
        times_ms.append((time.perf_counter() - start) * 1000.0)
    return times_ms


def time_rounds(interpreters: List[Any], warmup: int, runs: int, repeats: int, gap_s: float
                ) -> List[List[List[float]]]:
    """`repeats` rounds of one burst per interpreter, every two bursts `gap_s` apart: the bursts of each one.

    Going round the interpreters (one per thread count) instead of timing each in a block spreads a
    slow stretch of the machine over every count instead of one. The pause comes between counts too:
    a multi-thread interpreter's worker threads keep spinning a while after its burst, and on a machine
    with few cores they slowed the next count's burst (1 thread after 2: 6.6 against 4.6 ms on a 2-core
    machine, benchmarks/device_truth.md).
    """
    bursts = [[] for _ in interpreters]  # type: List[List[List[float]]]
    for index in range(repeats):
        for which, interpreter in enumerate(interpreters):
            if index or which:
                time.sleep(gap_s)
            bursts[which].append(_burst(interpreter, warmup, runs))
    return bursts


def sustained(interpreter: Any, seconds: float, sysfs: str, np: Any) -> Dict[str, Any]:
    """Invoke without pause for `seconds`: latency and temperature over time, first against last stretch.

    The stretches compared are the first and last minute for runs of 10 minutes or more, else the first
    and last tenth. About once a second (and once more at the end) a sample records the time, the
    temperature, the current clock and the median latency of the invokes since the sample before (None
    in the first sample, taken before any invoke), so latency can be drawn over time beside the heat.
    """
    start = time.perf_counter()
    stamps, times_ms, samples = [], [], []  # type: List[float], List[float], List[List[Any]]
    throttled_start, next_sample, window = read_throttled(), 0.0, []  # type: Optional[str], float, List[float]

    def sample(at: float) -> None:
        median = round(float(np.median(window)), 6) if window else None
        samples.append([round(at, 2), read_temperature(sysfs), read_cpufreq(sysfs)["cpu_cur_freq_khz"], median])
        del window[:]

    while True:
        now = time.perf_counter() - start
        if now >= seconds:
            break
        if now >= next_sample:
            sample(now)
            next_sample = now + 1.0
        began = time.perf_counter()
        interpreter.invoke()
        took = (time.perf_counter() - began) * 1000.0
        times_ms.append(took)
        window.append(took)
        stamps.append(began - start)
    if window:
        sample(time.perf_counter() - start)
    stretch = 60.0 if seconds >= 600 else seconds / 10.0
    first = [ms for at, ms in zip(stamps, times_ms) if at < stretch] or times_ms[:1]
    last = [ms for at, ms in zip(stamps, times_ms) if at >= seconds - stretch] or times_ms[-1:]
    first_ms, last_ms = float(np.median(first)), float(np.median(last))
    return {"seconds": seconds, "invokes": len(times_ms), "stretch_s": round(stretch, 3),
            "first_median_ms": round(first_ms, 6), "last_median_ms": round(last_ms, 6),
            "slowdown": round(last_ms / first_ms, 4) if first_ms > 0 else None,
            "median_ms": round(float(np.median(times_ms)), 6),
            "samples": samples,  # [seconds, temperature_c, cpu_cur_freq_khz, median_ms since the sample before]
            "throttled_start": throttled_start, "throttled_end": read_throttled()}


def pick_threads(curve: Dict[int, float], fixed: Optional[int]) -> int:
    """The thread count whose figures are reported: `fixed` when given, else the fastest one."""
    if fixed is not None:
        return fixed
    return min(curve, key=lambda count: (curve[count], count))


def summarize(times_ms: List[float], np: Any) -> Dict[str, float]:
    """Median, p90 (linear interpolation), min and population std of the timed invokes."""
    arr = np.asarray(times_ms, dtype=np.float64)
    return {
        "median_ms": float(np.median(arr)),
        "p90_ms": float(np.percentile(arr, 90)),
        "min_ms": float(arr.min()),
        "std_ms": float(arr.std()),
    }


def fastest_burst(bursts: List[List[float]], np: Any) -> Dict[str, Any]:
    """The figures of the burst with the lowest median, and every burst's median (`repeat_medians_ms`)."""
    summaries = [summarize(times_ms, np) for times_ms in bursts]
    figures = dict(min(summaries, key=lambda burst: burst["median_ms"]))  # type: Dict[str, Any]
    figures["repeat_medians_ms"] = [round(burst["median_ms"], 4) for burst in summaries]
    return figures


def emit(payload: Dict[str, Any]) -> None:
    """Write the one JSON object the caller parses (the last `{` line of stdout)."""
    sys.stdout.write(json.dumps(payload, sort_keys=True) + "\n")
    sys.stdout.flush()


def fail(code: int, message: str, payload: Optional[Dict[str, Any]] = None) -> int:
    """Report an error: message on stderr, what is known on stdout, non-zero exit."""
    if payload is not None:
        payload = dict(payload)
        payload["error"] = message
        emit(payload)
    sys.stderr.write("runner: " + message + "\n")
    sys.stderr.flush()
    return code


def take_lock(path: str) -> Optional[int]:
    """Hold an exclusive, non-blocking flock on `path` until this process exits.

    Returns the open descriptor, or None when another process holds the lock (the device is busy).
    The holder's PID is written into the file, for the busy message.
    """
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return None
        raise
    os.ftruncate(fd, 0)
    os.write(fd, ("%d\n" % os.getpid()).encode())
    return fd


def lock_holder(path: str) -> str:
    """The PID written by the runner holding the lock, or "?"."""
    try:
        with open(path) as handle:
            return handle.read().strip() or "?"
    except OSError:
        return "?"


def thread_counts(text: str) -> List[int]:
    """--threads: "4" or "1,2,4" (each count once, each >= 1)."""
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError("expected a count or counts separated by commas: %r" % text)
    if any(count < 1 for count in counts) or len(set(counts)) != len(counts):
        raise argparse.ArgumentTypeError("thread counts must be >= 1 and distinct: %r" % text)
    return counts


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Time a .tflite model with LiteRT.")
    parser.add_argument("--model", help="path of the .tflite file")
    parser.add_argument("--threads", type=thread_counts, default=[1],
                        help="thread count, or counts separated by commas (1,2,4): each is timed")
    parser.add_argument("--threads-fixed", type=int, default=None,
                        help="report this count's figures (one of --threads) instead of the fastest count's")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=1,
                        help="time this many bursts of --warmup + --runs invokes; report the fastest burst")
    parser.add_argument("--repeat-gap-s", type=float, default=0.0, help="pause between bursts, seconds")
    parser.add_argument("--max-temp-c", type=float, default=None,
                        help="refuse to time (exit 4) when the SoC is hotter than this")
    parser.add_argument("--lock", help="lock file of the device: exit 6 if another runner holds it")
    parser.add_argument("--quiet-check-s", type=float, default=0.0,
                        help="before timing, idle this long and report the share of the CPU other processes used")
    parser.add_argument("--probe", action="store_true",
                        help="print the environment (runtime, CPU, temperature) and exit")
    parser.add_argument("--sustained-s", type=float, default=0.0,
                        help="after timing, invoke without pause this long and report latency and temperature "
                             "over time (`sustained`)")
    parser.add_argument("--sysfs-root", default=os.environ.get("NAS_RUNNER_SYSFS_ROOT") or "/sys",
                        help="where sysfs is (the CPU governor, clock and thermal zone are read there)")
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    if args.lock and not args.probe:
        # Before loading the runtime (seconds on a Pi): a busy device is told at once, and the runtime's
        # start-up never runs beside another runner's timed invokes.
        try:
            held = take_lock(args.lock)
        except OSError as exc:
            return fail(1, "cannot open lock file %s: %s" % (args.lock, exc), {})
        if held is None:
            return fail(EXIT_BUSY, "another runner is timing on this device (pid %s holds %s)"
                        % (lock_holder(args.lock), args.lock), {})
    interpreter_cls, runtime, version = load_runtime()
    env = environment(runtime, version, args.sysfs_root)
    if interpreter_cls is None:
        return fail(EXIT_NO_RUNTIME, "no TFLite runtime: install ai-edge-litert (pip install "
                    "ai-edge-litert numpy) or tflite-runtime for %s" % sys.executable, env)
    if args.probe:
        emit(env)
        return 0
    if not args.model:
        return fail(EXIT_BAD_INPUT, "--model is required (or --probe)", env)
    if args.warmup < 0 or args.runs < 1 or args.repeats < 1 or args.repeat_gap_s < 0:
        return fail(EXIT_BAD_INPUT, "need --warmup >= 0, --runs >= 1, --repeats >= 1, "
                    "--repeat-gap-s >= 0", env)
    if args.threads_fixed is not None and args.threads_fixed not in args.threads:
        return fail(EXIT_BAD_INPUT, "--threads-fixed %d is not one of --threads %s"
                    % (args.threads_fixed, ",".join(str(c) for c in args.threads)), env)
    if not os.path.isfile(args.model):
        return fail(EXIT_BAD_INPUT, "model not found: %s" % args.model, env)
    temp = env["temperature_c"]
    if args.max_temp_c is not None and temp is not None and temp > args.max_temp_c:
        return fail(EXIT_TOO_HOT, "too hot: %.1f C > %.1f C" % (temp, args.max_temp_c), env)

    import numpy as np

    others = other_cpu_share(args.quiet_check_s)
    interpreters = []  # type: List[Any]
    try:
        for count in args.threads:
            interpreter = interpreter_cls(model_path=args.model, num_threads=count)
            interpreter.allocate_tensors()
            fill_inputs(interpreter, np)
            interpreters.append(interpreter)
    except Exception as exc:  # the runtime raises ValueError/RuntimeError for unusable models
        return fail(EXIT_BAD_INPUT, "cannot load %s: %s" % (args.model, exc), env)

    try:
        bursts = time_rounds(interpreters, args.warmup, args.runs, args.repeats, args.repeat_gap_s)
    except Exception as exc:
        return fail(EXIT_INVOKE_FAILED, "invoke failed: %s" % exc, env)

    figures = dict((count, fastest_burst(timed, np)) for count, timed in zip(args.threads, bursts))
    chosen = pick_threads(dict((count, fig["median_ms"]) for count, fig in figures.items()), args.threads_fixed)
    result = dict(env)
    result.update(figures[chosen])
    result["runs"] = args.runs
    result["repeats"] = args.repeats
    result["repeat_gap_s"] = args.repeat_gap_s
    result["warmup"] = args.warmup
    result["threads"] = chosen
    result["threads_curve"] = dict((str(count), round(fig["median_ms"], 6)) for count, fig in figures.items())
    result["threads_fixed"] = args.threads_fixed
    interpreter = interpreters[args.threads.index(chosen)]
    result["input_dtype"] = tensor_dtypes(interpreter.get_input_details(), np)
    result["output_dtype"] = tensor_dtypes(interpreter.get_output_details(), np)
    # Read again after timing: heat, throttling and the clock during the runs is what the figures saw.
    result["temperature_c"] = read_temperature(args.sysfs_root)
    result["throttled"] = read_throttled()
    result["cpu_cur_freq_khz"] = read_cpufreq(args.sysfs_root)["cpu_cur_freq_khz"]
    result["cpu_cur_freq_before_khz"] = env["cpu_cur_freq_khz"]
    result["temperature_before_c"] = temp
    result["other_cpu_share"] = others
    if args.sustained_s > 0:
        try:
            result["sustained"] = sustained(interpreter, args.sustained_s, args.sysfs_root, np)
        except Exception as exc:
            return fail(EXIT_INVOKE_FAILED, "invoke failed under sustained load: %s" % exc, env)
    emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
