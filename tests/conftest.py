"""Shared fixtures for the hardware tests: a real OpenSSH server, a tiny model, profile helpers.

The SSH tests talk to a real `sshd` on 127.0.0.1 (own host key, own client key, free port), because
host-key checks, auth failures, dropped links and remote timeouts are exactly what a mock would get
wrong. A missing sshd fails the tests with the install command instead of skipping them.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

SSHD = Path("/usr/sbin/sshd")
POSTGRES_URL = os.environ.get("NAS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _keygen(path: Path) -> str:
    """Generate an ed25519 key pair without passphrase; return the public key line."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "nas-test", "-f", str(path)],
                   check=True, stdin=subprocess.DEVNULL)
    return path.with_suffix(".pub").read_text().strip()


@dataclass
class Sshd:
    """A running test sshd and the keys that go with it."""

    host: str
    port: int
    user: str
    pid: int
    root: Path
    client_key: Path  # authorised
    other_key: Path  # a valid key the server does not accept
    host_key_line: str  # "ssh-ed25519 AAAA..." of the server
    other_host_key_line: str  # a different host key, for the "changed key" test
    log: Path

    def known_hosts(self, path: Path, key_line: str | None = None) -> Path:
        """Write a known_hosts file listing this server with its key (or another key)."""
        path.write_text(f"[{self.host}]:{self.port} {key_line or self.host_key_line}\n")
        return path

    def kill_sessions(self) -> int:
        """Kill every per-connection sshd process (the listener stays): drops live connections."""
        children = psutil.Process(self.pid).children(recursive=True)
        for child in children:
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass
        return len(children)


@contextmanager
def running_sshd(root: Path, sftp: bool = True) -> Iterator[Sshd]:
    """`sshd -D` on a free loopback port with its own keys under `root`; without the SFTP subsystem
    when `sftp` is false (as on minimal or hardened device images)."""
    if not SSHD.exists() or shutil.which("ssh-keygen") is None:
        pytest.fail(f"{SSHD} or ssh-keygen not found: the SSH tests need a real OpenSSH server; "
                    "install it with `apt-get install -y openssh-server`", pytrace=False)
    host_pub = _keygen(root / "host_key")
    other_host_pub = _keygen(root / "other_host_key")
    _keygen(root / "client_key")
    _keygen(root / "other_client_key")
    (root / "authorized_keys").write_text((root / "client_key.pub").read_text())
    for key in ("client_key", "other_client_key", "host_key"):
        (root / key).chmod(stat.S_IRUSR | stat.S_IWUSR)
    port = _free_port()
    config = root / "sshd_config"
    config.write_text("\n".join([
        f"Port {port}",
        "ListenAddress 127.0.0.1",
        f"HostKey {root / 'host_key'}",
        f"AuthorizedKeysFile {root / 'authorized_keys'}",
        f"PidFile {root / 'sshd.pid'}",
        "StrictModes no",
        "UsePAM no",
        "PermitRootLogin prohibit-password",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        *(["Subsystem sftp internal-sftp"] if sftp else []),
        "MaxStartups 50",
        "LogLevel VERBOSE",
    ]) + "\n")
    try:
        os.makedirs("/run/sshd", exist_ok=True)  # privilege separation directory (root only)
    except PermissionError:
        pass
    log = root / "sshd.log"
    proc = subprocess.Popen([str(SSHD), "-D", "-f", str(config), "-E", str(log)],
                            stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        if proc.poll() is not None:
            pytest.fail(f"sshd exited with {proc.returncode}: {log.read_text() if log.exists() else ''}",
                        pytrace=False)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"sshd did not listen on port {port}: {log.read_text()}", pytrace=False)
            time.sleep(0.05)
    server = Sshd(host="127.0.0.1", port=port, user=getpass.getuser(), pid=proc.pid, root=root,
                  client_key=root / "client_key", other_key=root / "other_client_key",
                  host_key_line=" ".join(host_pub.split()[:2]),
                  other_host_key_line=" ".join(other_host_pub.split()[:2]), log=log)
    try:
        yield server
    finally:
        server.kill_sessions()
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """The test sshd, for the whole session."""
    with running_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


@pytest.fixture(scope="session")
def sshd_without_sftp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """A second test sshd that offers no SFTP subsystem."""
    with running_sshd(tmp_path_factory.mktemp("sshd_nosftp"), sftp=False) as server:
        yield server


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 16x16 float32 conv net as .tflite: each invoke takes microseconds."""
    from nas.hardware.check import build_reference_model

    return build_reference_model(tmp_path_factory.mktemp("model") / "tiny.tflite", 16, 16, 8)


@pytest.fixture(scope="session")
def tiny_model_b(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second tiny model with other bytes (another sha256)."""
    from nas.hardware.check import build_reference_model

    return build_reference_model(tmp_path_factory.mktemp("model_b") / "tiny_b.tflite", 16, 16, 4)


def write_profile(path: Path, data: dict[str, Any]) -> Path:
    """Write a profile YAML (the tests load profiles through load_hardware, like users do)."""
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def wrapper_python(path: Path, body: str) -> str:
    """An executable sh script standing in for the device's python; `$PY` is the real one."""
    path.write_text(f"#!/bin/sh\nPY={sys.executable}\n{body}\n")
    path.chmod(0o755)
    return str(path)


def ssh_device(sshd: Sshd, tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    """A fast SSH profile mapping for the test server (warmup 1, runs 5, short timeouts)."""
    data: dict[str, Any] = {
        "name": f"ssh-{uuid.uuid4().hex[:8]}",
        "kind": "ssh",
        "host": sshd.host,
        "port": sshd.port,
        "user": sshd.user,
        "key_file": str(sshd.client_key),
        "known_hosts": str(sshd.known_hosts(tmp_path / "known_hosts")),
        "python": sys.executable,
        "workdir": str(tmp_path / "remote dir $x"),  # a space and a `$`: quoting must hold
        "threads": 1, "warmup": 1, "runs": 5, "repeats": 2, "repeat_gap_s": 0, "quiet_check_s": 0,
        "retries": 1, "retry_backoff_s": 0.1,
        "connect_timeout_s": 5, "step_timeout_s": 20, "measure_timeout_s": 30, "lease_s": 60,
    }
    data.update(overrides)
    return data


def local_device(**overrides: Any) -> dict[str, Any]:
    """A fast local profile mapping with a unique name (leases are shared across test runs): warmup 1,
    runs 5, best of 2 bursts with no pause between them."""
    # quiet_check_s 0: figures are not refused for load, so the tests hold on a busy machine;
    # test_runner's contention test turns the check on.
    data: dict[str, Any] = {"name": f"local-{uuid.uuid4().hex[:8]}", "kind": "local",
                            "threads": 1, "warmup": 1, "runs": 5, "repeats": 2, "repeat_gap_s": 0,
                            "quiet_check_s": 0, "step_timeout_s": 20, "measure_timeout_s": 30, "lease_s": 60}
    data.update(overrides)
    return data


@pytest.fixture()
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'nas.db'}"


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The PostgreSQL test database; unreachable is a failure with the reason, not a skip."""
    import sqlalchemy

    from nas.infra.db import make_engine

    engine = make_engine(POSTGRES_URL)
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("select 1"))
    except Exception as exc:
        pytest.fail(f"PostgreSQL at {POSTGRES_URL} is needed for the lease tests "
                    f"(set NAS_TEST_POSTGRES_URL): {exc}", pytrace=False)
    finally:
        engine.dispose()
    return POSTGRES_URL


@pytest.fixture()
def fresh_postgres_url(postgres_url: str) -> Iterator[str]:
    """An empty PostgreSQL database of its own (Optuna's tables not created yet), dropped afterwards."""
    import sqlalchemy
    from sqlalchemy.engine import make_url

    from nas.infra.db import make_engine

    name = f"nas_test_{uuid.uuid4().hex[:12]}"
    engine = make_engine(postgres_url)
    admin = engine.execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


@contextmanager
def small_disk(path: Path, size: str) -> Iterator[Path]:
    """A real file system of `size` (a tmpfs, e.g. "1m") mounted at `path`: writes past it fail with ENOSPC,
    and pages of a memory map past it with SIGBUS, as on a full disk. Needs root (mount)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)
