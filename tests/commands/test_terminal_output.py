"""`nas run` at a real terminal (a pseudo-terminal of 120, then 80 columns): nas's own lines only, and the
closing table's figures whole."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from helpers import REPO
from helpers.workers import write_config

THIRD_PARTY = ("INFO:", "[I 20", "[W 20", "absl", "cuda", "CUDA", "WARNING: All log messages")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


def run_in_terminal(argv: list[str], columns: int, cwd: Path, timeout: float = 600) -> str:
    """`argv`'s whole output at a pseudo-terminal `columns` wide, escape sequences taken out."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": str(columns), "LINES": "40", "TERM": "xterm"}
    env.pop("NAS_VERBOSE", None)
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=follower, stdout=follower, stderr=follower,
                            start_new_session=True)
    os.close(follower)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 1.0)
            if ready:
                try:
                    data = os.read(leader, 65536)
                except OSError:  # the terminal closed: every process on it has exited
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        else:
            proc.kill()
            pytest.fail(f"{' '.join(argv)} ran over {timeout:g} s")
    finally:
        os.close(leader)
    assert proc.wait(timeout=30) == 0, b"".join(chunks).decode("utf-8", "replace")
    return ANSI.sub("", b"".join(chunks).decode("utf-8", "replace").replace("\r", ""))


def check_output(text: str, columns: int) -> None:
    lines = [line for line in text.splitlines() if line.strip()]
    strays = [line for line in lines if any(mark in line for mark in THIRD_PARTY)]
    assert not strays, "other programs' lines at the terminal:\n" + "\n".join(strays)
    start = next(i for i, line in enumerate(lines) if "best trials" in line)
    table = lines[start:start + 12]
    assert not [line for line in table if "…" in line], "\n".join(table)
    assert all(len(line) <= columns for line in table), "\n".join(table)
    header = next(line for line in table if "trial" in line and "score" in line)
    assert "si-RMSE" in header and "latency ms" in header
    row = next(line for line in table if re.match(r"^[│|]\s+\d+\s+[│|]", line))
    assert re.search(r"[│|]\s+\d+\.\d{3}\s+[│|]\s+\d\.\d{4}\s+[│|]", row), row  # score and si-RMSE whole


@pytest.mark.slow
def test_a_smoke_run_at_a_terminal_shows_nas_lines_and_whole_figures(tmp_path):
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'nas.db'}", "tty", trials=1)
    argv = [sys.executable, "-m", "nas", "run", "--config", str(config)]
    check_output(run_in_terminal(argv, 120, tmp_path), 120)
    # The rerun has nothing left to train and prints the same table, at 80 columns this time.
    rerun = run_in_terminal(argv, 80, tmp_path)
    assert "already has 1 finished trials" in rerun
    check_output(rerun, 80)
