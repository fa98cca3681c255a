"""The SSH backend: the same runner.py, uploaded over SFTP and run on a remote device.

Security rules this module keeps: host keys are verified (RejectPolicy semantics; a new key is
trusted only on explicit opt-in and then saved), authentication is by key file or agent only, and
no key material or password is ever stored or logged. Every remote step has a deadline, because a
wedged Pi must fail a trial, not hang the study.
"""

from __future__ import annotations

import base64
import hashlib
import os
import posixpath
import select
import shlex
import socket
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import paramiko

from nas.hardware.local import RUNNER_PATH, Backend, DeviceError, parse_runner_output, runner_args
from nas.hardware.profile import DeviceProfile

SYSTEM_KNOWN_HOSTS = Path("~/.ssh/known_hosts").expanduser()
# Errors that mean "the link is gone", where a fresh connection may succeed.
_LINK_ERRORS = (OSError, EOFError, paramiko.SSHException)


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH-style `SHA256:...` fingerprint, the form `ssh-keygen -lf` prints on the device."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def host_entry(host: str, port: int) -> str:
    """The known_hosts name of a host: `host` on port 22, `[host]:port` otherwise."""
    return host if port == 22 else f"[{host}]:{port}"


def add_key_hint(profile: DeviceProfile) -> str:
    """How to add the device's host key, with this profile's values filled in."""
    target = profile.known_hosts or SYSTEM_KNOWN_HOSTS
    return (f"check the fingerprint on the device (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub), "
            f"then add the key: ssh-keyscan -p {profile.port} {profile.host} >> {target}")


class _UnknownHostKey(paramiko.SSHException):
    """The server offered a key that no known_hosts file lists (and trusting is not opted in)."""

    def __init__(self, name: str, key: paramiko.PKey):
        super().__init__(f"unknown host key for {name}")
        self.key = key


class _HostKeyPolicy(paramiko.MissingHostKeyPolicy):
    """Reject unknown keys, or, on explicit opt-in, accept and append them to the known_hosts file."""

    def __init__(self, trust_new: bool, save_to: Path, notify: Callable[[str], None]):
        self.trust_new = trust_new
        self.save_to = save_to
        self.notify = notify

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        if not self.trust_new:
            raise _UnknownHostKey(hostname, key)
        client.get_host_keys().add(hostname, key.get_name(), key)
        self.save_to.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Append one line instead of rewriting the file: keeps the user's comments and hashed entries.
        fd = os.open(self.save_to, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a") as handle:
            handle.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
        self.notify(f"trusted new host key {key.get_name()} {fingerprint(key)} for {hostname}, "
                    f"saved to {self.save_to}")


class SshBackend(Backend):
    """One SSH device: a persistent connection, SFTP uploads by content hash, deadline-bound exec."""

    def __init__(self, profile: DeviceProfile, trust_new_host_keys: bool = False,
                 notify: Callable[[str], None] | None = None, runner: Path = RUNNER_PATH):
        super().__init__(profile)
        if not runner.is_file():
            raise DeviceError(f"runner script not found at {runner}")
        self.trust_new_host_keys = trust_new_host_keys
        self.notify = notify or (lambda _msg: None)
        self.runner = runner
        self.runner_name = f"runner-{hashlib.sha256(runner.read_bytes()).hexdigest()[:12]}.py"
        self.uploads: list[str] = []  # file names uploaded, in order (tests and benchmarks read it)
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._runner_remote: str | None = None
        self._host_key: str | None = None

    # ---- connection -------------------------------------------------------------------------

    @property
    def identity(self) -> str:
        return f"{self.profile.address} host key {self._host_key or 'not checked yet'}"

    def _remote_dir(self) -> str:
        """The workdir as SFTP and the shell both read it (`~/x` is relative to the login home)."""
        wd = self.profile.workdir
        if wd == "~":
            return "."
        return wd[2:] if wd.startswith("~/") else wd

    def _connected(self) -> bool:
        transport = self._client.get_transport() if self._client else None
        return bool(transport and transport.is_active())

    def connect(self) -> None:
        """Connect (or keep the live connection), verify the host key, upload the runner."""
        if self._connected() and self._sftp is not None and self._runner_remote:
            return
        self.close()
        started = time.perf_counter()
        prof = self.profile
        name = prof.name
        client = paramiko.SSHClient()
        if prof.known_hosts is not None:
            save_to = prof.known_hosts
            if prof.known_hosts.is_file():
                client.load_host_keys(str(prof.known_hosts))
            elif not self.trust_new_host_keys:
                raise DeviceError(f"{name}: known_hosts file {prof.known_hosts} does not exist; "
                                  f"{add_key_hint(prof)}")
        else:
            save_to = SYSTEM_KNOWN_HOSTS
            client.load_system_host_keys()
        client.set_missing_host_key_policy(_HostKeyPolicy(self.trust_new_host_keys, save_to,
                                                          self.notify))
        timeout = prof.connect_timeout_s
        try:
            client.connect(
                prof.host, port=prof.port, username=prof.user,
                key_filename=str(prof.key_file) if prof.key_file else None,
                allow_agent=prof.key_file is None, look_for_keys=prof.key_file is None,
                timeout=timeout, banner_timeout=timeout, auth_timeout=timeout,
                channel_timeout=timeout,
            )
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise DeviceError(
                f"{name}: host key for {host_entry(prof.host or '', prof.port)} has CHANGED: the "
                f"device offered {exc.key.get_name()} {fingerprint(exc.key)}, but "
                f"{prof.known_hosts or SYSTEM_KNOWN_HOSTS} expects {fingerprint(exc.expected_key)}. "
                f"Refusing to connect (possible man-in-the-middle). If the device was reinstalled, "
                f"remove the old line (ssh-keygen -R '{host_entry(prof.host or '', prof.port)}' "
                f"-f {prof.known_hosts or SYSTEM_KNOWN_HOSTS}), then {add_key_hint(prof)}"
            ) from None
        except _UnknownHostKey as exc:
            client.close()
            raise DeviceError(
                f"{name}: unknown host key for {host_entry(prof.host or '', prof.port)} "
                f"({exc.key.get_name()} {fingerprint(exc.key)}) is not in "
                f"{prof.known_hosts or SYSTEM_KNOWN_HOSTS}; refusing to connect. "
                f"{add_key_hint(prof)} (or opt in with trust_new_host_keys)"
            ) from None
        except paramiko.PasswordRequiredException:
            client.close()
            raise DeviceError(f"{name}: key file {prof.key_file} is passphrase-protected; load it "
                              "into ssh-agent and remove key_file from the profile") from None
        except paramiko.AuthenticationException:
            client.close()
            how = f"key file {prof.key_file}" if prof.key_file else "ssh-agent and ~/.ssh default keys"
            raise DeviceError(
                f"{name}: authentication failed for {prof.address} using {how}: add the public "
                f"key to ~/.ssh/authorized_keys of user {prof.user or 'the current user'} on the device"
            ) from None
        except (socket.timeout, TimeoutError):
            client.close()
            raise DeviceError(f"{name}: cannot connect to {prof.address}: timed out after "
                              f"{timeout:g} s", retry=True) from None
        except _LINK_ERRORS as exc:
            client.close()
            raise DeviceError(f"{name}: cannot connect to {prof.address}: {exc}", retry=True) from None
        transport = client.get_transport()
        assert transport is not None
        transport.set_keepalive(10)
        remote_key = transport.get_remote_server_key()
        self._host_key = f"{remote_key.get_name()} {fingerprint(remote_key)}"
        self._client = client
        try:
            self._sftp = client.open_sftp()
            self._sftp.get_channel().settimeout(prof.step_timeout_s)
            self._makedirs(self._remote_dir())
            self._runner_remote = self._put(self.runner, self.runner_name)
        except DeviceError:
            self.close()
            raise
        except _LINK_ERRORS as exc:
            self.close()
            raise DeviceError(f"{name}: preparing {prof.workdir} failed: {exc}", retry=True) from None
        finally:
            self._timed("connect", started)

    def close(self) -> None:
        for closable in (self._sftp, self._client):
            if closable is not None:
                try:
                    closable.close()
                except Exception:  # closing a dead link must never mask the real error
                    pass
        self._sftp = None
        self._client = None
        self._runner_remote = None

    # ---- files ------------------------------------------------------------------------------

    def _makedirs(self, path: str) -> None:
        """`mkdir -p` over SFTP (the workdir may be on a freshly booted device's /tmp)."""
        assert self._sftp is not None
        parts = path.split("/")
        current = "/" if path.startswith("/") else ""
        for part in parts:
            if not part or part == ".":
                continue
            current = posixpath.join(current, part) if current else part
            try:
                self._sftp.stat(current)
            except FileNotFoundError:
                try:
                    self._sftp.mkdir(current, 0o755)
                except OSError:
                    self._sftp.stat(current)  # created meanwhile is fine; anything else raises

    def _put(self, local: Path, name: str) -> str:
        """Upload under a content-hash name unless a file of that name and size is already there."""
        assert self._sftp is not None
        remote = posixpath.join(self._remote_dir(), name)
        size = local.stat().st_size
        try:
            if self._sftp.stat(remote).st_size == size:
                return remote
        except FileNotFoundError:
            pass
        partial = f"{remote}.part-{uuid.uuid4().hex[:8]}"
        started = time.perf_counter()
        self._sftp.put(str(local), partial)
        self._sftp.posix_rename(partial, remote)  # atomic: a cut upload never looks complete
        self._timed("upload", started)
        self.uploads.append(name)
        return remote

    def stage_model(self, path: Path, sha256: str) -> str:
        self.connect()
        try:
            return self._put(Path(path), f"{sha256}.tflite")
        except _LINK_ERRORS as exc:
            self.close()
            raise DeviceError(f"{self.profile.name}: upload of the model failed: {exc}",
                              retry=True) from None

    def discard_model(self, model_ref: str) -> None:
        if self._sftp is None:
            return
        try:
            self._sftp.remove(model_ref)
        except (OSError, paramiko.SSHException):
            pass  # a leftover file only costs disk; the figures are already stored

    # ---- commands ---------------------------------------------------------------------------

    def _exec(self, argv: list[str], timeout: float, what: str) -> tuple[int, str, str]:
        """Run argv (each argument shell-quoted) with a deadline on the whole exchange.

        The shell prints its PID and then execs the command, so on timeout the remote process
        group can be killed instead of being left running on the device.
        """
        assert self._client is not None
        name = self.profile.name
        transport = self._client.get_transport()
        command = "echo $$; exec " + " ".join(shlex.quote(a) for a in argv)
        try:
            if transport is None or not transport.is_active():
                raise paramiko.SSHException("SSH session not active")
            chan = transport.open_session(timeout=self.profile.step_timeout_s)
            chan.exec_command(command)
        except _LINK_ERRORS as exc:
            self.close()
            raise DeviceError(f"{name}: connection lost before {what}: {exc}", retry=True) from None
        deadline = time.monotonic() + timeout
        out, err = bytearray(), bytearray()
        try:
            while True:
                while chan.recv_ready():
                    out += chan.recv(65536)
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
                if chan.exit_status_ready():
                    while chan.recv_ready():
                        out += chan.recv(65536)
                    while chan.recv_stderr_ready():
                        err += chan.recv_stderr(65536)
                    rc = chan.recv_exit_status()  # ready, so this does not block
                    if rc == -1:  # closed without an exit status: dead link, or a signal
                        self._no_status(transport, what, argv)
                    break
                if not transport.is_active() or chan.closed:
                    self.close()
                    raise DeviceError(f"{name}: connection dropped during {what}", retry=True)
                if time.monotonic() > deadline:
                    self._kill(bytes(out))
                    self.close()
                    blame = "model" if argv[2:3] == ["--model"] else "device"
                    raise DeviceError(f"{name}: {what} timed out after {timeout:g} s "
                                      "(remote process killed)", blame=blame)
                select.select([chan], [], [], 0.05)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            self.close()
            raise DeviceError(f"{name}: connection dropped during {what}: {exc}", retry=True) from None
        finally:
            chan.close()
        text = out.decode("utf-8", "replace")
        first, _, rest = text.partition("\n")
        if not first.strip().isdigit():
            rest = text  # a shell that did not echo the PID: keep everything
        return rc, rest, err.decode("utf-8", "replace")

    def _no_status(self, transport: paramiko.Transport, what: str, argv: list[str]) -> None:
        """Explain a channel that closed without an exit status (always raises)."""
        name = self.profile.name
        # The transport thread closes channels just before it marks itself inactive.
        settle = time.monotonic() + 1.0
        while transport.is_active() and time.monotonic() < settle:
            time.sleep(0.02)
        if not transport.is_active():
            self.close()
            raise DeviceError(f"{name}: connection dropped during {what}", retry=True)
        blame = "model" if argv[2:3] == ["--model"] else "device"
        raise DeviceError(f"{name}: {what} was killed on the device (no exit status; "
                          "out of memory?)", blame=blame)

    def _kill(self, head: bytes) -> None:
        """Kill the timed-out remote process group (PID from the command's first output line)."""
        pid = head.split(b"\n", 1)[0].strip()
        if not pid.isdigit() or self._client is None:
            return
        p = pid.decode()
        try:
            # sshd starts each command in its own session, so -PID is the whole process group.
            _, stdout, _ = self._client.exec_command(
                f"kill -KILL -- -{p} 2>/dev/null || kill -KILL {p}", timeout=self.profile.step_timeout_s)
            deadline = time.monotonic() + min(5.0, self.profile.step_timeout_s)
            while not stdout.channel.exit_status_ready() and time.monotonic() < deadline:
                time.sleep(0.02)
        except _LINK_ERRORS:
            pass  # the link is gone too; the caller reports the timeout either way

    def _runner(self, model: str | None, timeout: float, what: str) -> dict[str, Any]:
        self.connect()
        assert self._runner_remote is not None
        argv = [self.profile.interpreter, self._runner_remote, *runner_args(self.profile, model)]
        rc, out, err = self._exec(argv, timeout, what)
        return parse_runner_output(self.profile.name, what, rc, out, err)

    def probe(self) -> dict[str, Any]:
        self.connect()
        started = time.perf_counter()
        try:
            return self._runner(None, self.profile.step_timeout_s, "probe")
        finally:
            self._timed("probe", started)

    def run(self, model_ref: str) -> dict[str, Any]:
        self.connect()
        started = time.perf_counter()
        try:
            return self._runner(model_ref, self.profile.measure_timeout_s, "timed run")
        finally:
            self._timed("run", started)
