"""Faults: real `nas run` studies through scripted faults, and what survived each (issue #27, "Prove it").

Every scenario is a study of its own at the smoke budget (tiny synthetic data, the smoke space, no
teacher) in a fresh PostgreSQL database, run by two real `nas run` workers on a pool of two devices:
this machine and an OpenSSH server on 127.0.0.1 (a real sshd with its own keys, tests/helpers/devices.py).
Each fault is injected at the moment named, from outside the workers, as the world would:

- `db_outage`: PostgreSQL goes away for `--outage-s` while a trial is exporting (a TCP relay this script
  owns drops every connection and refuses new ones, as a restarting server does), then comes back.
- `disk_export`: the workers' temporary folder (a small tmpfs) fills up while a trial exports; freed once
  a trial has failed of it.
- `disk_frames`: the frame cache (a `--frames-size` tmpfs) is full when a worker starts decoding frames; freed, then
  the workers start again.
- `ssh_stall`: the SSH device stops answering mid-measurement (SIGSTOP to its sshd session processes) for
  `--stall-s`, then comes back (SIGCONT).
- `kill_rerun`: a worker is SIGKILLed (with its conversion server) while a trial exports, and started again at once.
- `wedged_server`: a worker's conversion server is SIGSTOPped during a conversion. The workers run with
  the conversion deadline capped at `--conversion-timeout-s` and the parent-side `reply_margin_s` at
  `--reply-margin-s` (the defaults, 900 s + 120 s, would make the run last half an hour).

For each: trials lost (the study short of its target), trials duplicated (a failed trial retried more
than once, or trained trials beyond the target), trials wrongly blamed on the model (a failed trial
whose reason names none of the faults' causes), files left truncated or orphaned (a stored `.tflite`
whose bytes no longer match its recorded sha256, `nas-trial-*` scratch folders and `.NAME.PID.HEX.tmp`
temporaries left after the workers exit), seconds to recover (from the fault's end, or from the kill or
stop, to the next trained trial) and whether the workers' output said what happened in one clear line
with no traceback.

Usage (root, for the tmpfs mounts; PostgreSQL and sshd on this machine):
    python benchmarks/faults.py [--trials 2] [--outage-s 30] [--stall-s 20] [--only db_outage,kill_rerun]
                                [--quick] [--postgres postgresql://postgres@127.0.0.1:5432/test]
Writes benchmarks/results/faults/<date>.json (or --out).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import optuna
import psutil
import yaml
from sqlalchemy.engine import make_url

from common import results_path, write_result

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # the tests' real sshd and device profiles
from helpers.devices import local_device, running_sshd, ssh_device  # noqa: E402
from helpers.disk import small_disk  # noqa: E402
from helpers.outage import DroppingRelay, fresh_database  # noqa: E402

State = optuna.trial.TrialState
SCENARIOS = ("db_outage", "disk_export", "disk_frames", "ssh_stall", "kill_rerun", "wedged_server")
# A failed trial whose reason names one of these was blamed on the fault, not on the model.
FAULT_CAUSES = re.compile(r"database|disk|space|no longer running|device|conversion server|interrupted|"
                          r"unreachable|heartbeat|SIGTERM|lease", re.IGNORECASE)
TEMPORARY = re.compile(r"^\..+\.\d+\.[0-9a-f]{8}\.tmp$")  # nas.infra.files.atomic_path's temporaries
STARTED: list[subprocess.Popen] = []  # every worker, so that a stopped benchmark leaves none running
# Each worker runs `nas run` with the conversion deadlines of the command line (see the module's docstring).
LAUNCHER = ("import sys\nfrom nas.export.conversion_server import CONVERSIONS as C\n"
            "C.reply_margin_s = float(sys.argv.pop(1)); cap = float(sys.argv.pop(1)); run = C.run\n"
            "C.run = lambda cwd, argv, timeout_s: run(cwd, argv, min(timeout_s, cap))\n"
            "sys.argv[0] = 'nas'\nfrom nas.cli import main\nmain()\n")


# --- the world the workers live in ---------------------------------------------------------------------------


def fill(folder: Path) -> Path:
    """Write a ballast file in `folder` until its file system is full; the file."""
    ballast = folder / "ballast"
    with open(ballast, "wb", buffering=0) as out:  # unbuffered: nothing left to flush onto the full disk
        try:
            while True:
                out.write(bytes(1 << 16))
                out.flush()
        except OSError:
            pass
    return ballast


# --- workers -------------------------------------------------------------------------------------------------

class Study:
    """One scenario's study: its config, its workers (real processes) and their logs."""

    def __init__(self, work: Path, storage: str, trials: int, args: argparse.Namespace, devices: list[dict],
                 **settings: Any):
        self.work, self.storage, self.trials, self.args, self.name = work, storage, trials, args, "faults"
        self.tmp = work / "tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)
        (work / "pool.yaml").write_text(yaml.safe_dump({"devices": devices}, sort_keys=False))
        config = {"space": str(REPO / "search_spaces" / "smoke.yaml"), "budget": "smoke", "trials": trials,
                  "study": self.name, "storage": storage, "results": str(work / "results"), "distill": False,
                  "synth_train": 8, "synth_val": 2, "synth_test": 1, "baselines": "none",
                  "hardware": str(work / "pool.yaml"), "heartbeat_s": 5, "grace_s": 60, **settings}
        self.config = work / "faults.yaml"
        self.config.write_text(yaml.safe_dump(config))
        self.workers: list[subprocess.Popen] = []
        self.logs: list[Path] = []

    def start(self) -> subprocess.Popen:
        log = self.work / f"worker-{len(self.workers)}.log"
        env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(self.tmp)}
        with open(log, "w") as out:
            worker = subprocess.Popen([sys.executable, "-c", LAUNCHER, str(self.args.reply_margin_s),
                                       str(self.args.conversion_timeout_s), "run", "--config", str(self.config)],
                                      cwd=self.work, env=env, stdout=out, stderr=subprocess.STDOUT,
                                      start_new_session=True)
        self.workers.append(worker)
        STARTED.append(worker)
        self.logs.append(log)
        return worker

    def trials_now(self) -> list[optuna.trial.FrozenTrial]:
        try:
            return optuna.load_study(study_name=self.name, storage=self.storage).get_trials()
        except Exception:  # not created yet, or the database is away
            return []

    def scratch(self, worker: subprocess.Popen | None = None) -> list[Path]:
        """Trial scratch folders (`nas.infra.workers.trial_scratch`): a trial is exporting."""
        return list(self.tmp.glob("nas-trial-*" if worker is None else f"nas-trial-*-{worker.pid}-*"))

    def wait(self, what: str, check: Callable[[], Any], timeout: float = 600) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if result := check():
                return result
            if self.workers and all(w.poll() is not None for w in self.workers):
                raise RuntimeError(f"every worker exited while waiting for {what}")
            time.sleep(0.2)
        raise RuntimeError(f"timed out waiting for {what}")

    def finish(self, timeout: float = 900) -> list[int | None]:
        deadline = time.monotonic() + timeout
        for worker in self.workers:
            try:
                worker.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()
        return [w.returncode for w in self.workers]

    def output(self) -> str:
        return "\n".join(log.read_text(errors="replace") for log in self.logs if log.exists())


def cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:  # ended meanwhile
        return []


def descendants(worker: subprocess.Popen) -> list[psutil.Process]:
    try:
        return psutil.Process(worker.pid).children(recursive=True)
    except psutil.Error:
        return []


# --- what survived ---------------------------------------------------------------------------------------------

def stored_tflite_mismatches(study: Study, trials: list[optuna.trial.FrozenTrial]) -> int:
    """Complete trials whose stored `.tflite` is missing or not the bytes their record hashed."""
    store, bad = study.work / "results" / "artifacts", 0
    for trial in trials:
        if trial.state != State.COMPLETE or "tflite_sha256" not in trial.user_attrs:
            continue
        metas = [json.loads(v) for k, v in trial.system_attrs.items() if k.startswith("artifacts:")]
        ids = [m["artifact_id"] for m in metas if str(m.get("filename", "")).endswith(".tflite")]
        digests = {hashlib.sha256((store / i).read_bytes()).hexdigest() for i in ids if (store / i).is_file()}
        bad += trial.user_attrs["tflite_sha256"] not in digests
    return bad


def survey(study: Study, fault_end: float | None, line: re.Pattern, codes: list[int | None]) -> dict[str, Any]:
    """The scenario's figures once its workers have exited (`fault_end`: epoch seconds the fault ended)."""
    trials = study.trials_now()
    trained = [t for t in trials if t.state in (State.COMPLETE, State.PRUNED)
               and not t.user_attrs.get("pruned_before_training")]
    failed = [t for t in trials if t.state == State.FAIL]
    retries: dict[int, int] = {}
    for t in trials:
        if (of := optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(t)) is not None:
            retries[of] = retries.get(of, 0) + 1
    duplicated = sum(n - 1 for n in retries.values() if n > 1) + max(0, len(trained) - study.trials)
    blamed = [t.number for t in failed if not FAULT_CAUSES.search(t.user_attrs.get("fail_reason", ""))]
    orphans = [p.name for p in study.tmp.glob("nas-trial-*")]
    orphans += [str(p.relative_to(study.work)) for p in (study.work / "results").rglob(".*.tmp")
                if TEMPORARY.match(p.name)]
    after = sorted(t.datetime_complete.timestamp() for t in trained if t.datetime_complete is not None
                   and fault_end is not None and t.datetime_complete.timestamp() >= fault_end)
    text = study.output()
    return {"target": study.trials, "trained": len(trained), "lost": max(0, study.trials - len(trained)),
            "duplicated": duplicated, "blamed_on_model": len(blamed), "blamed_trials": blamed,
            "failed": [{"trial": t.number, "reason": t.user_attrs.get("fail_reason")} for t in failed],
            "left_running": sum(t.state in (State.RUNNING, State.WAITING) for t in trials),
            "truncated_files": stored_tflite_mismatches(study, trials), "orphaned_files": orphans,
            "recover_s": round(after[0] - fault_end, 1) if after else None,
            "clear_line": bool(line.search(text)) and "Traceback" not in text,
            "line": next((m.group(0) for m in [line.search(text)] if m), None), "exit_codes": codes}


# --- the scenarios ---------------------------------------------------------------------------------------------

def two_workers(study: Study) -> None:
    study.start()
    study.start()


def db_outage(work: Path, url: str, args: argparse.Namespace, devices: list[dict]) -> dict[str, Any]:
    parsed = make_url(url)
    relay = DroppingRelay((parsed.host or "127.0.0.1", parsed.port or 5432))
    study = Study(work, relay.url(url), args.trials, args, devices, outage_s=int(args.outage_s * 4 + 60),
                  grace_s=int(max(60, args.outage_s * 2)))
    two_workers(study)
    study.wait("a trial to export", study.scratch)
    relay.go_down()
    time.sleep(args.outage_s)
    relay.come_back()
    end = time.time()
    codes = study.finish()
    study.storage = url  # read past the relay
    return survey(study, end, re.compile(r"study database back after \d+ s[^\n]*"), codes)


def disk_export(work: Path, url: str, args: argparse.Namespace, devices: list[dict]) -> dict[str, Any]:
    with small_disk(work / "tmp", args.tmp_size) as tmp:
        study = Study(work, url, args.trials, args, devices)
        two_workers(study)
        study.wait("a trial to export", study.scratch)
        ballast = fill(tmp)
        study.wait("a trial failed of the full disk", lambda: any(t.state == State.FAIL for t in study.trials_now()),
                   timeout=args.conversion_timeout_s + 300)
        ballast.unlink()
        end = time.time()
        codes = study.finish()
        return survey(study, end, re.compile(r"[^\n]*(no space|disk is full|full disk|needs? [\d.]+ [kMG]B)[^\n]*",
                                             re.IGNORECASE), codes)


def disk_frames(work: Path, url: str, args: argparse.Namespace, devices: list[dict]) -> dict[str, Any]:
    with small_disk(work / "results" / "cache" / "frames", args.frames_size) as frames:
        ballast = fill(frames)
        study = Study(work, url, args.trials, args, devices)
        first = study.start()
        study.finish()
        said = study.logs[0].read_text(errors="replace")
        ballast.unlink()
        end = time.time()
        two_workers(study)
        codes = [first.returncode, *study.finish()[1:]]
        result = survey(study, end, re.compile(r"error: [^\n]*frames[^\n]*"), codes)
        result["full_disk_run"] = {"exit": first.returncode, "lines": said.strip().splitlines()[-3:]}
        return result


def ssh_stall(work: Path, url: str, args: argparse.Namespace, devices: list[dict], sshd: Any) -> dict[str, Any]:
    study = Study(work, url, args.trials, args, devices)
    two_workers(study)

    def timing_on_ssh() -> list[psutil.Process]:
        under = psutil.Process(sshd.pid).children(recursive=True)
        busy = any("--model" in cmdline(p) for p in under)
        return [p for p in under if p.is_running() and p.name().startswith("sshd")] if busy else []

    stopped = study.wait("the SSH device to time a model", timing_on_ssh)
    for proc in stopped:
        proc.suspend()
    time.sleep(args.stall_s)
    for proc in stopped:
        try:
            proc.resume()
        except psutil.NoSuchProcess:
            pass
    end = time.time()
    codes = study.finish()
    return survey(study, end, re.compile(r"[^\n]*marked unhealthy[^\n]*"), codes)


def kill_rerun(work: Path, url: str, args: argparse.Namespace, devices: list[dict]) -> dict[str, Any]:
    study = Study(work, url, args.trials, args, devices)
    two_workers(study)
    victim = study.workers[0]
    study.wait("worker 0 to export a trial", lambda: study.scratch(victim))
    os.killpg(victim.pid, signal.SIGKILL)  # the worker and its conversion server
    victim.wait()
    end = time.time()
    study.start()
    codes = study.finish()
    return survey(study, end, re.compile(r"trial \d+ failed: its worker \S+ is no longer running[^\n]*"), codes)


def wedged_server(work: Path, url: str, args: argparse.Namespace, devices: list[dict]) -> dict[str, Any]:
    study = Study(work, url, args.trials, args, devices)
    two_workers(study)

    def converting() -> list[psutil.Process]:
        if not study.scratch():
            return []
        return [p for w in study.workers for p in descendants(w) if "--serve" in cmdline(p) and p.children()]

    servers = study.wait("a conversion", converting)
    servers[0].suspend()
    end = time.time()
    codes = study.finish()
    return survey(study, end, re.compile(r"[^\n]*conversion server itself stopped answering[^\n]*"), codes)


# --- the run ---------------------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", default=os.environ.get("NAS_TEST_POSTGRES_URL",
                                                              "postgresql://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--trials", type=int, default=2, help="trained trials each scenario's study is to reach")
    parser.add_argument("--outage-s", type=float, default=30.0, help="how long PostgreSQL is away")
    parser.add_argument("--stall-s", type=float, default=20.0,
                        help="how long the SSH device does not answer (its measure deadline is 10 s)")
    parser.add_argument("--conversion-timeout-s", type=float, default=90.0, help="the workers' conversion deadline")
    parser.add_argument("--reply-margin-s", type=float, default=10.0, help="the conversion server's reply margin")
    parser.add_argument("--tmp-size", default="64m", help="the workers' temporary folder in disk_export")
    parser.add_argument("--frames-size", default="64m", help="the frame cache in disk_frames (the smoke budget's "
                        "8 training frames take 12.3 MB decoded)")
    parser.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated scenarios")
    parser.add_argument("--quick", action="store_true", help="shorter faults: 10 s outage, 15 s stall")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.quick:
        args.outage_s, args.stall_s = min(args.outage_s, 10.0), min(args.stall_s, 15.0)
    if os.geteuid() != 0:
        sys.exit("benchmarks/faults.py mounts small tmpfs file systems: run it as root")
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    if unknown := set(chosen) - set(SCENARIOS):
        sys.exit(f"unknown scenario(s) {sorted(unknown)}; choose from {', '.join(SCENARIOS)}")
    results: dict[str, Any] = {}
    out = args.out or results_path("faults")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="nas-faults-") as root, ExitStack() as stack:
        sshd = stack.enter_context(running_sshd(Path(root)))
        for name in chosen:
            work = Path(root) / name
            work.mkdir()
            devices = [ssh_device(sshd, work, name="ssh", measure_timeout_s=10, step_timeout_s=10),
                       local_device(name="local")]
            t0 = time.monotonic()
            print(f"{name}: running", flush=True)
            with fresh_database(args.postgres, "nas_faults") as url:
                try:
                    extra = (sshd,) if name == "ssh_stall" else ()
                    results[name] = globals()[name](work, url, args, devices, *extra)
                except Exception as exc:  # one scenario's breakage is a figure too; the others still run
                    results[name] = {"error": f"{type(exc).__name__}: {exc}"}
                finally:
                    for worker in STARTED:
                        if worker.poll() is None:
                            os.killpg(worker.pid, signal.SIGKILL)
                            worker.wait()
            results[name]["seconds"] = round(time.monotonic() - t0, 1)
            print(f"{name}: {json.dumps(results[name])}", flush=True)
            # after every scenario: a run stopped part-way keeps the figures it has
            payload = {"settings": {k: v for k, v in vars(args).items() if k != "out"}, "scenarios": results,
                       "seconds": round(time.monotonic() - started, 1), "complete": name == chosen[-1]}
            write_result("faults", payload, path=out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
