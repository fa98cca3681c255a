"""What does measuring over SSH cost compared with measuring locally, and how noisy are figures?

For one model, on one device config, it times `LatencyMeter.measure()` end to end:

- local: the runner as a subprocess (the baseline every trial pays anyway);
- ssh cold: a fresh meter (connect, host key check, runner upload, probe, model upload, run);
- ssh warm: connection kept, cache off (probe, upload, run, cleanup);
- ssh cached: the same model again (in-process, no device contact) and from a fresh worker
  (connect + probe for the runtime version, then the cache);

and the spread of the figures themselves: p90/median within a measurement, and the spread of the
medians over repeated measurements. By default the "remote" device is a throw-away OpenSSH server
on 127.0.0.1, so the SSH overhead is protocol + process cost without network latency; pass
`--hardware FILE` to use the first SSH device of a real profile (a Raspberry Pi) instead.

    .venv/bin/python benchmarks/ssh_overhead.py [--repeats 10] [--runs 30] [--hardware FILE]

Writes benchmarks/results/ssh_overhead/<date>.json (or --out) and prints a table.
"""

from __future__ import annotations

import argparse
import getpass
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from nas.hardware import DeviceProfile, LatencyMeter, LatencyResult, load_hardware
from nas.hardware.check import build_reference_model

from common import results_path, write_result



@contextmanager
def loopback_sshd(folder: Path) -> Iterator[dict[str, Any]]:
    """A private sshd on a free 127.0.0.1 port; yields the SSH profile fields to reach it."""
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / name)],
                       check=True)
    (folder / "authorized_keys").write_text((folder / "client_key.pub").read_text())
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = folder / "sshd_config"
    config.write_text(f"Port {port}\nListenAddress 127.0.0.1\nHostKey {folder / 'host_key'}\n"
                      f"AuthorizedKeysFile {folder / 'authorized_keys'}\nPidFile {folder / 'pid'}\n"
                      "StrictModes no\nUsePAM no\nPermitRootLogin prohibit-password\n"
                      "PasswordAuthentication no\nSubsystem sftp internal-sftp\n")
    os.makedirs("/run/sshd", exist_ok=True)
    proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-f", str(config), "-E", str(folder / "log")])
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"sshd did not start: {(folder / 'log').read_text()}") from None
                time.sleep(0.05)
        host_key = " ".join((folder / "host_key.pub").read_text().split()[:2])
        (folder / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key}\n")
        yield {"kind": "ssh", "host": "127.0.0.1", "port": port, "user": getpass.getuser(),
               "key_file": str(folder / "client_key"), "known_hosts": str(folder / "known_hosts"),
               "python": sys.executable, "workdir": str(folder / "remote")}
    finally:
        proc.terminate()
        proc.wait(10)


def timed(fn: Callable[[], LatencyResult]) -> tuple[float, LatencyResult]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def spread(results: list[LatencyResult]) -> dict[str, float]:
    """Noise of the figures: within a measurement (p90/median) and across repeats (medians)."""
    medians = [r.median_ms for r in results]
    ratios = [r.p90_ms / r.median_ms for r in results]
    return {
        "p90_over_median_mean": statistics.fmean(ratios),
        "p90_over_median_max": max(ratios),
        "median_of_medians_ms": statistics.median(medians),
        "medians_min_ms": min(medians),
        "medians_max_ms": max(medians),
        "medians_max_over_min": max(medians) / min(medians),
        "medians_cv": statistics.pstdev(medians) / statistics.fmean(medians),
    }


def run(args: argparse.Namespace, work: Path, ssh_fields: dict[str, Any]) -> dict[str, Any]:
    common = {"threads": args.threads, "warmup": args.warmup, "runs": args.runs,
              "retries": 0, "lease_s": 900}
    local = DeviceProfile(name="bench-local", kind="local", **common)
    ssh = DeviceProfile.model_validate({"name": "bench-ssh", **common, **ssh_fields})
    model = build_reference_model(work / "reference.tflite", args.height, args.width, args.channels)
    url = f"sqlite:///{work / 'bench.db'}"
    out: dict[str, Any] = {"model": {"path": model.name, "bytes": model.stat().st_size,
                                     "input": [1, args.height, args.width, 3]}}

    with LatencyMeter([local], url, work, use_cache=False) as meter:
        meter.measure(model)  # first call pays imports into the page cache; not counted
        local_runs = [timed(lambda: meter.measure(model)) for _ in range(args.repeats)]

    with LatencyMeter([ssh], url, work, use_cache=False) as meter:
        cold_wall, _ = timed(lambda: meter.measure(model))
        cold_steps = dict(meter.step_seconds)
        warm_runs, warm_steps = [], []
        for _ in range(args.repeats):
            warm_runs.append(timed(lambda: meter.measure(model)))
            warm_steps.append(dict(meter.step_seconds))

    with LatencyMeter([ssh], url, work, use_cache=True) as meter:
        fresh_hit_wall, fresh_hit = timed(lambda: meter.measure(model))  # new worker: probe + lookup
        hits = [timed(lambda: meter.measure(model)) for _ in range(args.repeats)]
    assert fresh_hit.cached and all(r.cached for _, r in hits)

    def med(values: list[float]) -> float:
        return statistics.median(values)

    local_wall = med([w for w, _ in local_runs])
    warm_wall = med([w for w, _ in warm_runs])
    out["seconds"] = {
        "local_measure": local_wall,
        "ssh_cold_measure": cold_wall,
        "ssh_warm_measure": warm_wall,
        "ssh_cached_in_process": med([w for w, _ in hits]),
        "ssh_cached_fresh_worker": fresh_hit_wall,
        "overhead_warm_vs_local": warm_wall - local_wall,
        "overhead_cold_vs_local": cold_wall - local_wall,
    }
    out["ssh_cold_steps_s"] = cold_steps
    out["ssh_warm_steps_s"] = {k: med([s.get(k, 0.0) for s in warm_steps])
                               for k in sorted({k for s in warm_steps for k in s})}
    out["spread"] = {"local": spread([r for _, r in local_runs]),
                     "ssh": spread([r for _, r in warm_runs])}
    out["runtime"] = f"{local_runs[0][1].runtime} {local_runs[0][1].runtime_version}"
    out["cpu"] = local_runs[0][1].cpu
    return out


def report(data: dict[str, Any], console: Console) -> None:
    sec = data["seconds"]
    table = Table(title=f"SSH measurement overhead ({data['target']}, {data['runs']} runs, "
                        f"{data['threads']} threads, {data['repeats']} repeats)", title_justify="left")
    table.add_column("measure() path")
    table.add_column("wall s (median)", justify="right")
    table.add_column("vs local", justify="right")
    for label, key in [("local subprocess", "local_measure"), ("ssh cold (new connection)", "ssh_cold_measure"),
                       ("ssh warm (no cache)", "ssh_warm_measure"),
                       ("ssh cache hit, same worker", "ssh_cached_in_process"),
                       ("ssh cache hit, fresh worker", "ssh_cached_fresh_worker")]:
        table.add_row(label, f"{sec[key]:.3f}", f"{sec[key] - sec['local_measure']:+.3f}")
    console.print(table)
    steps = Table(title="SSH steps (s)", title_justify="left")
    steps.add_column("step")
    steps.add_column("cold", justify="right")
    steps.add_column("warm (median)", justify="right")
    for key in sorted(set(data["ssh_cold_steps_s"]) | set(data["ssh_warm_steps_s"])):
        steps.add_row(key, f"{data['ssh_cold_steps_s'].get(key, 0.0):.3f}",
                      f"{data['ssh_warm_steps_s'].get(key, 0.0):.3f}")
    console.print(steps)
    noise = Table(title="Spread of the figures", title_justify="left")
    noise.add_column("backend")
    for col in ("median of medians ms", "medians min..max ms", "max/min", "CV", "p90/median mean",
                "p90/median max"):
        noise.add_column(col, justify="right")
    for name, s in data["spread"].items():
        noise.add_row(name, f"{s['median_of_medians_ms']:.3f}",
                      f"{s['medians_min_ms']:.3f}..{s['medians_max_ms']:.3f}",
                      f"{s['medians_max_over_min']:.2f}", f"{s['medians_cv']:.3f}",
                      f"{s['p90_over_median_mean']:.2f}", f"{s['p90_over_median_max']:.2f}")
    console.print(noise)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hardware", type=Path, help="profile whose first ssh device is used "
                        "(default: a throw-away sshd on 127.0.0.1)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--height", type=int, default=96)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--out", type=Path, default=None,
                        help="result file (default: benchmarks/results/ssh_overhead/<UTC date and time>.json)")
    args = parser.parse_args()

    console = Console(width=max(Console().width, 110))
    with tempfile.TemporaryDirectory(prefix="nas-ssh-bench-") as tmp:
        work = Path(tmp)
        if args.hardware:
            remote = next((d for d in load_hardware(args.hardware) if d.kind == "ssh"), None)
            if remote is None:
                raise SystemExit(f"{args.hardware}: no ssh device in this profile")
            fields = remote.model_dump(exclude={"name", "threads", "warmup", "runs", "retries",
                                                "lease_s"}, exclude_none=True)
            data = run(args, work, fields)
            target = f"{remote.name} ({remote.address})"
        else:
            with loopback_sshd(work) as fields:
                data = run(args, work, fields)
            target = "loopback sshd on this machine"
    data.update({"target": target, "threads": args.threads, "warmup": args.warmup,
                 "runs": args.runs, "repeats": args.repeats})
    path = write_result("ssh_overhead", data, path=args.out or results_path("ssh_overhead"))
    report(data, console)
    console.print(f"written {path}")


if __name__ == "__main__":
    main()
