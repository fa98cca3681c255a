"""The device kinds a profile may name, each bound to its Backend class.

Its own module so that the profile (which checks a kind) and the backends (which are looked up by kind)
both import it without importing each other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nas.hardware.backend import Backend

# kind -> "module:Class", imported on first use (SSH pulls in paramiko only when a profile needs it).
KINDS: dict[str, "str | type[Backend]"] = {
    "local": "nas.hardware.local:LocalBackend",
    "ssh": "nas.hardware.ssh:SshBackend",
}


def register_backend(kind: str, target: "str | type[Backend]") -> None:
    """Add a device kind: a Backend class, or "module:Class" imported when first used."""
    KINDS[kind] = target


def backend_kinds() -> tuple[str, ...]:
    """The kinds a profile may name."""
    return tuple(sorted(KINDS))
