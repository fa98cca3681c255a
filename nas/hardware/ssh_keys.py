"""SSH host keys: fingerprints, hints, and the policy that refuses unknown keys unless opted in.

Kept apart from the backend: this is the part that decides whom the study trusts to time its
models, and it reads best on its own.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path
from typing import Callable

import paramiko

from nas.hardware.profile import DeviceProfile

SYSTEM_KNOWN_HOSTS = Path("~/.ssh/known_hosts").expanduser()


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


class UnknownHostKey(paramiko.SSHException):
    """The server offered a key that no known_hosts file lists (and trusting is not opted in)."""

    def __init__(self, name: str, key: paramiko.PKey):
        super().__init__(f"unknown host key for {name}")
        self.key = key


class HostKeyPolicy(paramiko.MissingHostKeyPolicy):
    """Reject unknown keys, or, on explicit opt-in, accept and append them to the known_hosts file."""

    def __init__(self, trust_new: bool, save_to: Path, notify: Callable[[str], None]):
        self.trust_new = trust_new
        self.save_to = save_to
        self.notify = notify

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        if not self.trust_new:
            raise UnknownHostKey(hostname, key)
        client.get_host_keys().add(hostname, key.get_name(), key)
        self.save_to.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Append one line instead of rewriting the file: keeps the user's comments and hashed entries.
        fd = os.open(self.save_to, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a") as handle:
            handle.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
        self.notify(f"trusted new host key {key.get_name()} {fingerprint(key)} for {hostname}, "
                    f"saved to {self.save_to}")
