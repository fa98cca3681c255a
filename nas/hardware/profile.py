"""Hardware profiles: the YAML files that say where and how latency is measured.

A profile file holds one device or a pool (`devices: [...]`). Every problem is reported as a
`ConfigError` naming the file, so a bad profile stops `nas run` before any trial starts instead of
failing every trial later.
"""

from __future__ import annotations

import re
import socket
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from nas.config import read_yaml
from nas.errors import ConfigError
from nas.hardware.kinds import backend_kinds

# Fields that only make sense when the device is reached over SSH.
SSH_ONLY_FIELDS = ("host", "port", "user", "key_file", "known_hosts", "workdir")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")


class DeviceProfile(BaseModel):
    """One device: where it is, how to reach it and how to time a model on it.

    Timeouts and retry counts live here (not in code) because a Pi on Wi-Fi and this machine need
    very different values.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="unique device name, used in records, leases and the cache")
    kind: str = Field(description="backend kind: local, ssh (see nas.hardware.backend)")
    host: str | None = None
    port: int = Field(22, ge=1, le=65535)
    user: str | None = None
    key_file: Path | None = None
    known_hosts: Path | None = None
    python: str | None = None
    # Under the login's home: a world-writable /tmp would let anyone there swap the runner.
    workdir: str = "~/.cache/nas-bench"
    # One thread count, or several ([1, 2, 4]): each is timed and `threads_curve` records them; the figure
    # is the fastest count's, or `threads_fixed`'s (one of the list) when the deployment fixes the count.
    threads: int | tuple[int, ...] = 4
    threads_fixed: int | None = None
    warmup: int = Field(5, ge=0, le=10_000)
    runs: int = Field(30, ge=1, le=100_000)
    # The runner times `repeats` bursts of warm-up + runs, `repeat_gap_s` apart, and keeps the burst with the
    # lowest median: a burst slowed by other work on the machine is set aside (benchmarks/latency_repeatability.md). 1 burst is the plain one-loop timing.
    repeats: int = Field(3, ge=1, le=100)
    repeat_gap_s: float = Field(1.0, ge=0, le=60)
    max_temp_c: float = Field(75.0, gt=0, le=120)
    cooldown_s: float = Field(30.0, ge=0)
    cooldown_checks: int = Field(10, ge=0)
    # Before timing, the runner idles `quiet_check_s` and measures the share of all cores other processes
    # used; above `max_other_cpu` the figure would be too slow (another worker training, a test suite):
    # the meter waits `cooldown_s` and times again, and after `cooldown_checks` keeps the figure flagged
    # `contended`, uncached. quiet_check_s 0 turns the check off.
    quiet_check_s: float = Field(1.0, ge=0, le=60)
    max_other_cpu: float = Field(0.2, gt=0, le=1)
    retries: int = Field(2, ge=0, le=20)
    retry_backoff_s: float = Field(2.0, ge=0)
    connect_timeout_s: float = Field(15.0, gt=0)
    step_timeout_s: float = Field(60.0, gt=0)
    measure_timeout_s: float = Field(600.0, gt=0)
    lease_s: float = Field(120.0, ge=1)
    # How long a failing device stays out of use before it is probed again (a Pi reboot is ~1 min).
    unhealthy_s: float = Field(300.0, ge=0)

    @field_validator("name")
    @classmethod
    def _name_ok(cls, value: str) -> str:
        if not _NAME_RE.match(value):
            raise ValueError(
                "must be 1-64 characters of letters, digits, '_', '.', '@' or '-' "
                "(it names the device in records and leases)"
            )
        return value

    @field_validator("kind")
    @classmethod
    def _kind_known(cls, value: str) -> str:
        if value not in backend_kinds():
            raise ValueError(f"unknown device kind {value!r}; known: {', '.join(backend_kinds())}")
        return value

    @field_validator("threads", mode="before")
    @classmethod
    def _threads_ok(cls, value: Any) -> Any:
        """One message for every wrong shape: a count, or a non-empty list of distinct counts 1-256."""
        def is_count(item: Any) -> bool:
            return isinstance(item, int) and not isinstance(item, bool)

        if is_count(value):
            counts = [value]
        elif isinstance(value, (list, tuple)) and value and all(is_count(c) for c in value):
            counts = list(value)
        else:
            raise ValueError(f"must be a thread count or a non-empty list of counts (4, [1, 2, 4]), got {value!r}")
        bad = [c for c in counts if not 1 <= c <= 256]
        if bad:
            raise ValueError(f"thread counts must be 1 to 256, got {', '.join(map(str, bad))}")
        if len(set(counts)) != len(counts):
            raise ValueError(f"thread counts must be distinct, got {counts}")
        return value if is_count(value) else tuple(counts)

    @field_validator("key_file", "known_hosts")
    @classmethod
    def _expand_user(cls, value: Path | None) -> Path | None:
        return None if value is None else Path(value).expanduser()

    @field_validator("python", "workdir", "host", "user")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be empty")
        return value

    @model_validator(mode="after")
    def _kind_rules(self) -> DeviceProfile:
        if self.threads_fixed is not None and self.threads_fixed not in self.thread_counts:
            raise ValueError(f"threads_fixed {self.threads_fixed} is not one of threads {list(self.thread_counts)}")
        if self.kind == "ssh":
            if self.host is None:
                raise ValueError("kind: ssh needs a host")
        elif self.kind == "local":
            wrong = [f for f in SSH_ONLY_FIELDS if f in self.model_fields_set]
            if wrong:
                raise ValueError(f"{', '.join(wrong)} only apply to kind: ssh")
        return self

    @property
    def thread_counts(self) -> tuple[int, ...]:
        """The thread counts timed, in the profile's order (one for `threads: 4`)."""
        return self.threads if isinstance(self.threads, tuple) else (self.threads,)

    @property
    def interpreter(self) -> str:
        """The Python that runs runner.py: local default is this interpreter, SSH default python3."""
        if self.python:
            return self.python
        return sys.executable if self.kind == "local" else "python3"

    @property
    def key(self) -> str:
        """Lease and cache key.

        A local device is another machine's CPU when a study spans machines, so it is keyed per host
        (`local@hostname`); an SSH device is one physical box whatever machine reaches it.
        """
        if self.kind == "local":
            return f"{self.name}@{socket.gethostname()}"
        return self.name

    @property
    def address(self) -> str:
        """`user@host:port` for messages (never carries secrets)."""
        user = f"{self.user}@" if self.user else ""
        return f"{user}{self.host}:{self.port}"


# Seconds of sustained load when a run does not say (`sustained_s`): a board is watched for a minute, long enough
# for a passively cooled Pi to heat up; this machine for 10 s, which shows contention but spends little time.
SUSTAINED_S = {"local": 10.0}
SUSTAINED_DEVICE_S = 60.0


def default_sustained_s(device: DeviceProfile) -> float:
    """The sustained load a device is timed under when the run gives no `sustained_s`: 10 s for kind: local
    (this machine), 60 s for a device (kind: ssh, or any other kind)."""
    return SUSTAINED_S.get(device.kind, SUSTAINED_DEVICE_S)


def _describe(err: ValidationError, index: int | None) -> str:
    """One readable line per pydantic error, with the device it belongs to."""
    where = "" if index is None else f"devices[{index}]"
    lines = []
    for item in err.errors():
        loc = ".".join(str(p) for p in item["loc"])
        field = ".".join(p for p in (where, loc) if p)
        msg = item["msg"]
        if item["type"] == "extra_forbidden":
            msg = "unknown field"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        lines.append(f"{field}: {msg}" if field else msg)
    return "; ".join(lines)


def load_hardware(path: str | Path) -> list[DeviceProfile]:
    """Read a profile file: one device, or a pool under `devices:`. Raises ConfigError."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(path, "hardware profile not found")
    data: Any = read_yaml(path)  # not UTF-8, not YAML, unreadable: one line naming the file
    if not isinstance(data, dict):
        raise ConfigError(path, "expected a mapping (one device) or `devices: [...]` (a pool)")

    if "devices" in data:
        extra = sorted(set(data) - {"devices"})
        if extra:
            raise ConfigError(path, f"a pool file holds only `devices:`; unexpected: {', '.join(extra)}")
        entries = data["devices"]
        if not isinstance(entries, list) or not entries:
            raise ConfigError(path, "`devices` must be a non-empty list of device mappings")
        indexed: list[tuple[int | None, Any]] = list(enumerate(entries))
    else:
        indexed = [(None, data)]

    devices: list[DeviceProfile] = []
    for index, entry in indexed:
        if not isinstance(entry, dict):
            raise ConfigError(path, f"devices[{index}] must be a mapping")
        try:
            devices.append(DeviceProfile.model_validate(entry))
        except ValidationError as exc:
            raise ConfigError(path, _describe(exc, index)) from None

    seen: set[str] = set()
    for dev in devices:
        if dev.key_file is not None and not dev.key_file.is_file():
            raise ConfigError(path, f"{dev.name}: key_file {dev.key_file} does not exist")
        if dev.name in seen:
            raise ConfigError(path, f"device name {dev.name!r} is used twice; names must be unique")
        seen.add(dev.name)
    return devices
