"""`nas devices check FILE`: is each device usable for latency measurement, and what is it?

Runs every step a trial's measurement would (host key, runtime probe, temperature, throttling, one
timed reference model) and prints one table per device, so a broken Pi is found before a study
spends an hour training models it cannot time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from nas.infra.console import out
from nas.infra.files import sha256_file
from nas.hardware.backend import Backend, MeasurementError
from nas.hardware.meter import default_holder, make_backend
from nas.hardware.pool import LeaseHeartbeat, LeasePool
from nas.hardware.reference import build_reference_model, reference_model
from nas.infra.db import make_engine
from nas.infra.storage import check_database, check_writable_folder
from nas.hardware.profile import DeviceProfile, load_hardware
from nas.hardware.throttle import describe_throttled

# Styled cells: the consoles print text as it is (no markup), so messages with brackets survive.
OK, WARN, FAIL = Text("ok", style="green"), Text("warn", style="yellow"), Text("FAIL", style="red")


def _sustained_row(run: dict[str, Any], table: Table) -> bool:
    """The sustained-load row: first against last stretch, temperature, throttling; False if throttled."""
    temps = [s[1] for s in run.get("samples", []) if s[1] is not None]  # [seconds, °C, kHz, median ms]
    heat = f"; {temps[0]:.1f} -> {temps[-1]:.1f} °C (max {max(temps):.1f})" if temps else "; temperature unreadable"
    ok_start, _ = describe_throttled(run.get("throttled_start"))
    ok_end, text = describe_throttled(run.get("throttled_end"))
    slow = run.get("slowdown") or 1.0
    status = FAIL if not ok_end else WARN if slow > 1.1 else OK
    table.add_row("sustained load", status,
                  f"{run.get('seconds', 0):g} s, {run.get('invokes', 0)} invokes: median first "
                  f"{run.get('first_median_ms', 0):.2f} ms, last {run.get('last_median_ms', 0):.2f} ms "
                  f"(x{slow:.2f}, stretches of {run.get('stretch_s', 0):g} s){heat}; throttling at the end: {text}")
    return ok_end


def describe_governor(env: dict[str, Any]) -> tuple[Text, str]:
    """The CPU governor row: ok under `performance`, a warning otherwise (the clock follows the load)."""
    governor = env.get("cpu_governor") or "unknown"
    cur, top = env.get("cpu_cur_freq_khz"), env.get("cpu_max_freq_khz")
    clock = f" ({cur / 1000:.0f} of {top / 1000:.0f} MHz)" if cur and top else ""
    if governor == "performance":
        return OK, f"performance{clock}"
    if governor == "unknown":
        return WARN, "unknown (no cpufreq in sysfs): the clock the figures see cannot be checked"
    return WARN, (f"{governor}{clock}: the clock follows the load, so a short timed run may start slow; "
                  "for steady figures set `performance` (sudo cpupower frequency-set -g performance, or "
                  "echo performance | sudo tee /sys/devices/system/cpu/cpu*/cpufreq/scaling_governor)")


def _check_one(dev: DeviceProfile, backend: Backend, model: Callable[[], Path], pool: LeasePool | None,
               table: Table, sustained_s: float = 0.0) -> bool:
    """Fill one device's table; True when the device can be used."""
    if pool is not None and not pool.try_acquire(dev.key, dev.lease_s):
        table.add_row("lease", FAIL, "device is leased by a running worker; try later")
        return False
    try:
        with LeaseHeartbeat(pool, dev.key, dev.lease_s) if pool else contextlib.nullcontext():
            return _probe_and_time(dev, backend, model, table, sustained_s)
    finally:
        backend.close()
        if pool is not None:
            pool.release(dev.key)


def _probe_and_time(dev: DeviceProfile, backend: Backend, reference: Callable[[], Path], table: Table,
                    sustained_s: float = 0.0) -> bool:
    """The checks themselves; a failure becomes the table's last row."""
    healthy = True
    try:
        backend.connect()
        table.add_row("connection", OK, backend.identity)
        env = backend.probe()
        table.add_row("runtime", OK, f"{env.get('runtime')} {env.get('runtime_version')} "
                                     f"(Python {env.get('python')}, {dev.interpreter})")
        table.add_row("CPU", OK, f"{env.get('cpu')} ({env.get('cpu_count')} cores, "
                                 f"{env.get('machine')})")
        temp = env.get("temperature_c")
        if temp is None:
            table.add_row("temperature", WARN, "unreadable (no vcgencmd or thermal zone)")
        else:
            hot = temp > dev.max_temp_c
            healthy &= not hot
            table.add_row("temperature", FAIL if hot else OK,
                          f"{temp:.1f} °C (max_temp_c {dev.max_temp_c:g})")
        table.add_row("CPU governor", *describe_governor(env))
        throttle_ok, text = describe_throttled(env.get("throttled"))
        # A figure timed while throttled is wrong: the meter refuses it, so the device is not ready.
        healthy &= throttle_ok
        table.add_row("throttling", OK if throttle_ok else FAIL, text)
        model = reference()  # built at the first device that answered, not before connecting
        ref = backend.upload(model, sha256_file(model))
        out = backend.run(ref, sustained_s)
        backend.discard_model(ref)
        bursts = out.get("repeat_medians_ms") or []
        # Burst medians far apart say the device was not quiet: its figures would vary between trials.
        spread = f"; burst medians {' / '.join(f'{m:.2f}' for m in bursts)} ms" if len(bursts) > 1 else ""
        curve = out.get("threads_curve") or {}
        if len(curve) > 1:
            spread += "; by threads " + ", ".join(f"{n}: {ms:.2f}" for n, ms in curve.items()) + " ms"
        table.add_row("reference model", OK,
                      f"median {out['median_ms']:.2f} ms, p90 {out['p90_ms']:.2f} ms "
                      f"({out['runs']} runs, {out['threads']} threads, {model.name}{spread})")
        if sustained_s > 0:
            healthy &= _sustained_row(out.get("sustained") or {}, table)
    except MeasurementError as exc:
        table.add_row("error", FAIL, str(exc))
        healthy = False
    return healthy


def check_devices(path: str | Path, *, storage_url: str | None = None,
                  results_dir: Path | None = Path("results"), trust_new_host_keys: bool = False,
                  console: Console | None = None, sustained_s: float = 0.0) -> int:
    """Check every device of a profile file; 0 when all are usable, 1 otherwise.

    A bad profile raises ConfigError (the CLI reports it as one line). With `storage_url` the
    check leases each device, so it never disturbs a worker that is timing on it.
    """
    console = console or out
    devices = load_hardware(path)
    if storage_url:
        check_database(storage_url, create=False)  # a mistyped URL or path is one line, and creates nothing
    if results_dir:
        check_writable_folder(Path(results_dir) / "hardware", "results folder")
    built: list[Path] = []

    def model() -> Path:
        if not built:
            built.append(reference_model(results_dir))
        return built[0]

    pool = LeasePool(make_engine(storage_url), f"devices-check:{default_holder()}") if storage_url else None
    failed = 0
    for dev in devices:
        table = Table(title=f"{dev.name} ({dev.kind}{', ' + dev.address if dev.kind == 'ssh' else ''})",
                      title_justify="left", show_header=True)
        table.add_column("check")
        table.add_column("status")
        table.add_column("detail", overflow="fold")
        notes: list[str] = []
        try:
            backend = make_backend(dev, trust_new_host_keys, notes.append)
        except MeasurementError as exc:
            table.add_row("setup", FAIL, str(exc))
            ok = False
        else:
            ok = _check_one(dev, backend, model, pool, table, sustained_s)
        for text in notes:
            table.add_row("note", WARN, text)
        console.print(table)
        failed += not ok
    summary = f"{len(devices) - failed} of {len(devices)} device(s) ready"
    console.print(Text(summary, style="red" if failed else "green"))
    return 0 if not failed else 1


__all__ = ["build_reference_model", "check_devices", "describe_governor", "describe_throttled"]
