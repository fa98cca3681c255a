"""The SSH backend: the same runner.py, uploaded over SFTP and run on a remote device.

Security rules this module keeps: host keys are verified (RejectPolicy semantics; a new key is
trusted only on explicit opt-in and then saved, see `ssh_keys.py`), authentication is by key file or
agent only, and no key material or password is ever stored or logged. The workdir (default
`~/.cache/nas-bench` on the device) must be owned by the login user and writable by no one else,
since the runner is executed from it; every upload goes to a temporary name, is checked by its
sha256 on the device, and only then renamed into place. Every remote step has a deadline, because
a wedged Pi must fail a trial, not hang the study. The runner's process group is remembered while
it runs: a dropped link or an interrupted worker has it killed, so it never times alongside the
next run (and the runner's lock file refuses a second run meanwhile).
"""

from __future__ import annotations

import posixpath
import select
import shlex
import socket
import stat
import time
import uuid
from pathlib import Path
from typing import Any

import paramiko

from nas.hardware.backend import (RUNNER_PATH, Backend, BackendOptions, DeviceError,
                                  parse_runner_output, runner_args)
from nas.hardware.profile import DeviceProfile
from nas.hardware.ssh_keys import (SYSTEM_KNOWN_HOSTS, HostKeyPolicy, UnknownHostKey,  # noqa: F401
                                   add_key_hint, fingerprint, host_entry)

# Errors that mean "the link is gone", where a fresh connection may succeed.
_LINK_ERRORS = (OSError, EOFError, paramiko.SSHException)


class SshBackend(Backend):
    """One SSH device: a persistent connection, verified SFTP uploads, deadline-bound exec."""

    def __init__(self, profile: DeviceProfile, options: BackendOptions | None = None,
                 runner: Path = RUNNER_PATH):
        super().__init__(profile, options, runner)
        self.trust_new_host_keys = (options or BackendOptions()).trust_new_host_keys
        self.runner_name = f"runner-{self.runner_sha256[:12]}.py"
        self.uploads: list[str] = []  # file names uploaded, in order (tests and benchmarks read it)
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._runner_remote: str | None = None
        self._workdir: str | None = None  # absolute, as resolved on the device
        self._host_key: str | None = None  # "type SHA256:..." of the last verified connection
        # PID (= process group) of a remote command while it runs; kept when the link drops with
        # it running, so the next connection kills it before anything else is timed.
        self._running_pid: str | None = None

    # ---- identity ---------------------------------------------------------------------------

    @property
    def identity(self) -> str:
        return f"{self.profile.address} host key {self._host_key or 'not checked yet'}"

    def board_id(self, env: dict[str, Any] | None) -> str | None:
        """The verified host key: another board behind the same name has another one."""
        return self._host_key

    # ---- connection -------------------------------------------------------------------------

    def _connected(self) -> bool:
        transport = self._client.get_transport() if self._client else None
        return bool(transport and transport.is_active())

    def connect(self) -> None:
        """Connect (or keep the live connection), verify the host key, check the workdir, upload
        the runner, and kill a runner a dropped connection left running."""
        if self._connected() and self._sftp is not None and self._runner_remote:
            return
        self.close()
        started = time.perf_counter()
        prof = self.profile
        name = prof.name
        self.notify(f"{name}: connecting to {prof.address}")
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
        client.set_missing_host_key_policy(HostKeyPolicy(self.trust_new_host_keys, save_to,
                                                         self.notify))
        timeout = prof.connect_timeout_s
        entry = host_entry(prof.host or "", prof.port)
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
                f"{name}: host key for {entry} has CHANGED: the device offered "
                f"{exc.key.get_name()} {fingerprint(exc.key)}, but "
                f"{prof.known_hosts or SYSTEM_KNOWN_HOSTS} expects {fingerprint(exc.expected_key)}. "
                f"Refusing to connect (possible man-in-the-middle). If the device was reinstalled, "
                f"remove the old line (ssh-keygen -R '{entry}' "
                f"-f {prof.known_hosts or SYSTEM_KNOWN_HOSTS}), then {add_key_hint(prof)}"
            ) from None
        except UnknownHostKey as exc:
            client.close()
            raise DeviceError(
                f"{name}: unknown host key for {entry} ({exc.key.get_name()} {fingerprint(exc.key)})"
                f" is not in {prof.known_hosts or SYSTEM_KNOWN_HOSTS}; refusing to connect. "
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
            silent = self._silent_port(client, started, timeout)
            client.close()
            if silent:
                raise DeviceError(
                    f"{name}: cannot connect to {prof.address}: timed out after {timeout:g} s waiting for "
                    f"{silent}; the port accepts connections but no SSH server answers there: check that "
                    f"{prof.host}:{prof.port} is the device's sshd (host and port in the profile) and that no "
                    "firewall or proxy holds the connection", retry=True) from None
            raise DeviceError(f"{name}: cannot connect to {prof.address}: {exc}", retry=True) from None
        transport = client.get_transport()
        assert transport is not None
        transport.set_keepalive(10)
        remote_key = transport.get_remote_server_key()
        self._host_key = f"{remote_key.get_name()} {fingerprint(remote_key)}"
        self._client = client
        try:
            self._sftp = self._open_sftp(client)
            self._sftp.get_channel().settimeout(prof.step_timeout_s)
            self._kill_left_running()
            self._workdir = self._prepare_workdir()
            self._runner_remote = self._put(self.runner, self.runner_name, self.runner_sha256)
        except DeviceError:
            self.close()
            raise
        except _LINK_ERRORS as exc:
            self.close()
            raise DeviceError(f"{name}: preparing {prof.workdir} failed: {exc}", retry=True) from None
        finally:
            self._timed("connect", started)

    @staticmethod
    def _silent_port(client: paramiko.SSHClient, started: float, timeout: float) -> str | None:
        """What a connection that ran out of time waited for (the server's greeting, or the key exchange), or
        None when it did not time out there. Paramiko reports a server that never speaks as 'Error reading SSH
        protocol banner' or, when its own wait ends first, 'No existing session'."""
        transport = client.get_transport()
        if transport is None or transport.initial_kex_done or time.perf_counter() - started < timeout:
            return None
        return "the SSH key exchange" if transport.remote_version else "the SSH server's greeting"

    def _open_sftp(self, client: paramiko.SSHClient) -> paramiko.SFTPClient:
        """The SFTP session uploads go through; a server without the subsystem gets a fix, not "Channel closed"."""
        try:
            return client.open_sftp()
        except (EOFError, paramiko.SSHException):
            transport = client.get_transport()
            if transport is None or not transport.is_active():
                raise  # the link itself dropped: retried like any dropped link
            prof = self.profile
            raise DeviceError(
                f"{prof.name}: the SSH server at {prof.address} refused an SFTP session; "
                "nas uploads the runner and the models over SFTP. Enable it on the device: add "
                "'Subsystem sftp internal-sftp' (or the path of sftp-server) to /etc/ssh/sshd_config and "
                "restart sshd (on Debian-based images the openssh-sftp-server package provides sftp-server)"
            ) from None

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

    # ---- workdir ----------------------------------------------------------------------------

    def _prepare_workdir(self) -> str:
        """Resolve the workdir on the device, create it (0700), and refuse one others could write."""
        assert self._sftp is not None
        prof, name = self.profile, self.profile.name
        wd = prof.workdir
        home = self._sftp.normalize(".")
        if wd == "~":
            path = home
        elif wd.startswith("~/"):
            path = posixpath.join(home, wd[2:])
        else:
            path = posixpath.join(home, wd)  # an absolute wd stays as it is
        self._makedirs(path)
        st = self._sftp.stat(path)
        uid = self._login_uid()
        mode = st.st_mode or 0
        if not stat.S_ISDIR(mode):
            raise DeviceError(f"{name}: workdir {path} is not a folder")
        if st.st_uid != uid:
            raise DeviceError(
                f"{name}: workdir {path} is owned by uid {st.st_uid}, not by the login user "
                f"{prof.user or ''} (uid {uid}); refusing to run the runner from a folder someone "
                f"else controls. Use a folder of your own (default ~/.cache/nas-bench)")
        if mode & 0o022:
            raise DeviceError(
                f"{name}: workdir {path} is group- or world-writable (mode {stat.S_IMODE(mode):o}); "
                f"anyone there could replace the runner. Run `chmod go-w {shlex.quote(path)}` on "
                f"the device or use a private folder (default ~/.cache/nas-bench)")
        for entry in self._sftp.listdir_attr(path):
            if ".part-" in entry.filename:  # an upload cut by a dropped link
                try:
                    self._sftp.remove(posixpath.join(path, entry.filename))
                except OSError:
                    pass
        return path

    def _makedirs(self, path: str) -> None:
        """`mkdir -p` over SFTP, private (0700) where it creates a folder."""
        assert self._sftp is not None
        current = "/" if path.startswith("/") else ""
        for part in path.split("/"):
            if not part or part == ".":
                continue
            current = posixpath.join(current, part) if current else part
            try:
                self._sftp.stat(current)
            except FileNotFoundError:
                try:
                    self._sftp.mkdir(current, 0o700)
                except OSError:
                    self._sftp.stat(current)  # created meanwhile is fine; anything else raises

    def _login_uid(self) -> int:
        """The login user's numeric id on the device (owner the workdir must have)."""
        rc, out, err = self._exec(["id", "-u"], self.profile.step_timeout_s, "id -u")
        if rc != 0 or not out.strip().isdigit():
            raise DeviceError(f"{self.profile.name}: cannot read the login user's id "
                              f"(`id -u` exited {rc}: {err.strip()[:200]})")
        return int(out.strip())

    # ---- files ------------------------------------------------------------------------------

    def _remote_sha256(self, remote: str) -> str | None:
        """sha256 of a file on the device (coreutils sha256sum), None if it cannot be read."""
        rc, out, err = self._exec(["sha256sum", "--", remote], self.profile.step_timeout_s,
                                  "sha256 check")
        if rc == 127:
            raise DeviceError(f"{self.profile.name}: sha256sum not found on the device (coreutils); "
                              "it verifies every upload")
        words = out.split()
        digest = words[0].lstrip("\\").lower() if rc == 0 and words else ""
        return digest if len(digest) == 64 else None

    def _remove_quietly(self, remote: str) -> None:
        if self._sftp is None:
            return
        try:
            self._sftp.remove(remote)
        except Exception:  # the link may be gone; the next connect removes leftover parts
            pass

    def _put(self, local: Path, name: str, sha256: str, what: str | None = None) -> str:
        """Upload as `name` unless the device already holds those exact bytes (sha256 checked).

        The bytes go to a temporary name, are hashed on the device, and only then renamed: a cut
        or corrupted upload never looks complete, and its part is removed.
        """
        assert self._sftp is not None and self._workdir is not None
        remote = posixpath.join(self._workdir, name)
        try:
            self._sftp.stat(remote)
        except FileNotFoundError:
            pass
        else:
            if self._remote_sha256(remote) == sha256:
                return remote
            self.notify(f"{self.profile.name}: {name} on the device has other bytes; replacing it")
        if what:
            self.notify(f"{self.profile.name}: uploading {what} ({local.stat().st_size / 1e6:.1f} MB)")
        partial = f"{remote}.part-{uuid.uuid4().hex[:8]}"
        started = time.perf_counter()
        try:
            self._sftp.put(str(local), partial)
            got = self._remote_sha256(partial)
            if got != sha256:
                raise DeviceError(f"{self.profile.name}: upload of {name} arrived with sha256 "
                                  f"{got or 'unreadable'}, expected {sha256}", retry=True)
            self._sftp.posix_rename(partial, remote)  # atomic: a cut upload never looks complete
        except BaseException:
            self._remove_quietly(partial)
            raise
        self._timed("upload", started)
        self.uploads.append(name)
        return remote

    def upload(self, path: Path, sha256: str) -> str:
        self.connect()
        try:
            return self._put(Path(path), f"{sha256}.tflite", sha256, "model")
        except _LINK_ERRORS as exc:
            self.close()
            raise DeviceError(f"{self.profile.name}: upload of the model failed: {exc}",
                              retry=True) from None

    def discard_model(self, model_ref: str) -> None:
        self._remove_quietly(model_ref)  # a leftover file only costs disk; figures are stored

    # ---- commands ---------------------------------------------------------------------------

    def _exec(self, argv: list[str], timeout: float, what: str) -> tuple[int, str, str]:
        """Run argv (each argument shell-quoted) with a deadline on the whole exchange.

        The shell prints its PID and then execs the command; sshd makes it a session leader, so
        that PID names the process group to kill on timeout, on Ctrl-C, or after a dropped link.
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
        blame = "model" if argv[2:3] == ["--model"] else "device"
        try:
            while True:
                while chan.recv_ready():
                    out += chan.recv(65536)
                    self._note_pid(out)
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
                if chan.exit_status_ready():
                    while chan.recv_ready():
                        out += chan.recv(65536)
                    while chan.recv_stderr_ready():
                        err += chan.recv_stderr(65536)
                    rc = chan.recv_exit_status()  # ready, so this does not block
                    if rc == -1:  # closed without an exit status: dead link, or a signal
                        self._no_status(transport, what, blame)
                    self._running_pid = None
                    break
                if not transport.is_active() or chan.closed:
                    self.close()  # the PID stays remembered: the reconnect kills the group
                    raise DeviceError(f"{name}: connection dropped during {what}", retry=True)
                if time.monotonic() > deadline:
                    self._timed_out(what, timeout, blame)
                select.select([chan], [], [], 0.05)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            self.close()
            raise DeviceError(f"{name}: connection dropped during {what}: {exc}", retry=True) from None
        except DeviceError:
            raise
        except BaseException:
            # Ctrl-C while the runner runs: it must not go on timing unseen on the device.
            self._kill_group(self._running_pid, guard=False)
            self._running_pid = None
            raise
        finally:
            chan.close()
        text = out.decode("utf-8", "replace")
        first, _, rest = text.partition("\n")
        if not first.strip().isdigit():
            rest = text  # a shell that did not echo the PID: keep everything
        return rc, rest, err.decode("utf-8", "replace")

    def _timed_out(self, what: str, timeout: float, blame: str) -> None:
        """A remote step ran past its deadline: kill it and say whose fault that is (always raises).

        Only a device that answers the kill shows the step itself was slow (then `blame` holds, the
        model's for a timed run). A device that does not answer (sshd stopped, link frozen, board
        hung) is the device's fault: it is marked unhealthy and the model is timed elsewhere or
        later, never charged. The PID stays remembered so the next connection kills the runner.
        """
        name, address = self.profile.name, self.profile.address
        answered = self._kill_group(self._running_pid, guard=False)
        self.close()
        if answered is None:
            raise DeviceError(
                f"{name}: {what} timed out after {timeout:g} s and the device at {address} did not "
                "answer the kill either: the device (or the link to it) stopped responding; "
                "the model is not to blame", blame="device")
        self._running_pid = None
        raise DeviceError(f"{name}: {what} timed out after {timeout:g} s (remote process killed)",
                          blame=blame)  # type: ignore[arg-type]

    def _note_pid(self, out: bytearray) -> None:
        """Remember the command's PID once its first line (the shell's `echo $$`) has arrived."""
        if self._running_pid is None and b"\n" in out:
            first = bytes(out).split(b"\n", 1)[0].strip()
            if first.isdigit():
                self._running_pid = first.decode()

    def _no_status(self, transport: paramiko.Transport, what: str, blame: str) -> None:
        """Explain a channel that closed without an exit status (always raises)."""
        name = self.profile.name
        # The transport thread closes channels just before it marks itself inactive.
        settle = time.monotonic() + 1.0
        while transport.is_active() and time.monotonic() < settle:
            time.sleep(0.02)
        if not transport.is_active():
            self.close()
            raise DeviceError(f"{name}: connection dropped during {what}", retry=True)
        self._running_pid = None
        raise DeviceError(f"{name}: {what} was killed on the device (no exit status; "
                          "out of memory?)", blame=blame)  # type: ignore[arg-type]

    def _kill_group(self, pid: str | None, guard: bool) -> bool | None:
        """Kill a remote process group; with `guard`, only if it still runs our runner (the PID
        may have been reused since the link dropped). True when the kill command reported success,
        False when it did not (or there was nothing to kill), None when the device did not answer
        within a few seconds (the link or the device stopped responding)."""
        if not pid or not pid.isdigit() or self._client is None:
            return False
        kill = f"kill -KILL -- -{pid} 2>/dev/null || kill -KILL {pid}"
        if guard:
            kill = (f"grep -qaF -- {shlex.quote(self.runner_name)} /proc/{pid}/cmdline 2>/dev/null "
                    f"&& {{ {kill}; }}")
        wait = min(5.0, self.profile.step_timeout_s)
        try:
            _, stdout, _ = self._client.exec_command(kill, timeout=wait)
            deadline = time.monotonic() + wait
            while not stdout.channel.exit_status_ready() and time.monotonic() < deadline:
                time.sleep(0.02)
            if not stdout.channel.exit_status_ready():
                return None
            return stdout.channel.recv_exit_status() == 0
        except _LINK_ERRORS:
            return None  # the link is gone too; the caller reports its own error either way

    def _kill_left_running(self) -> None:
        """On a fresh connection: kill the runner a dropped link left running (it would keep the
        device busy, or time alongside the next run)."""
        pid, self._running_pid = self._running_pid, None
        if pid and self._kill_group(pid, guard=True):
            self.notify(f"{self.profile.name}: killed the runner the dropped connection left "
                        f"running (pid {pid})")

    def _runner(self, model: str | None, timeout: float, what: str, sustained_s: float = 0.0) -> dict[str, Any]:
        self.connect()
        assert self._runner_remote is not None and self._workdir is not None
        lock = posixpath.join(self._workdir, "runner.lock") if model else None
        argv = [self.profile.interpreter, self._runner_remote,
                *runner_args(self.profile, model, lock, sustained_s)]
        rc, out, err = self._exec(argv, timeout, what)
        return parse_runner_output(self.profile.name, what, rc, out, err)

    def probe(self) -> dict[str, Any]:
        self.connect()
        started = time.perf_counter()
        try:
            return self._runner(None, self.profile.step_timeout_s, "probe")
        finally:
            self._timed("probe", started)

    def run(self, model_ref: str, sustained_s: float = 0.0) -> dict[str, Any]:
        self.connect()
        started = time.perf_counter()
        try:
            return self._runner(model_ref, self.profile.measure_timeout_s + sustained_s, "timed run", sustained_s)
        finally:
            self._timed("run", started)
