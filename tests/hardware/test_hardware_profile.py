"""Profile loading: the shipped files load, pools work, and every mistake names the file."""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import REPO
from helpers.devices import write_profile

from nas.errors import ConfigError
from nas.hardware import DeviceProfile, load_hardware
from nas.hardware.backend import runner_args


def test_shipped_local_profile_loads() -> None:
    (dev,) = load_hardware(REPO / "hardware" / "local.yaml")
    assert (dev.name, dev.kind, dev.threads, dev.warmup, dev.runs) == ("local", "local", 1, 5, 30)
    assert (dev.repeats, dev.repeat_gap_s) == (3, 1.0)
    args = runner_args(dev, "m.tflite")  # what the runner is told: the profile's bursts and pause
    assert args[args.index("--repeats") + 1] == "3" and args[args.index("--repeat-gap-s") + 1] == "1"
    assert dev.interpreter == sys.executable  # default: the interpreter running nas
    assert dev.key == f"local@{socket.gethostname()}"


def test_example_profile_documents_the_contract(tmp_path: Path) -> None:
    """The example loads once its key_file exists, and comments every field it sets."""
    import yaml

    text = (REPO / "hardware" / "rpi4.example.yaml").read_text()
    data = yaml.safe_load(text)
    key = tmp_path / "id"
    key.write_text("not read at load time")
    data["key_file"] = str(key)
    (dev,) = load_hardware(write_profile(tmp_path / "rpi.yaml", data))
    assert (dev.kind, dev.threads, dev.port, dev.python) == ("ssh", 4, 22, "/home/pi/litert/bin/python3")
    for line in text.splitlines():
        if line and not line.startswith((" ", "#")) and ":" in line:
            assert "#" in line, f"undocumented field: {line}"
    assert set(DeviceProfile.model_fields) <= set(yaml.safe_load(text))


def test_pool_and_home_expansion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "key").write_text("x")
    path = write_profile(tmp_path / "pool.yaml", {"devices": [
        {"name": "a", "kind": "ssh", "host": "h1", "key_file": "~/key", "known_hosts": "~/kh"},
        {"name": "b", "kind": "ssh", "host": "h2", "port": 2222, "user": "pi"},
        {"name": "c", "kind": "local"},
    ]})
    a, b, c = load_hardware(path)
    assert a.key_file == tmp_path / "key" and a.known_hosts == tmp_path / "kh"
    assert b.address == "pi@h2:2222" and b.interpreter == "python3" and b.key == "b"
    assert c.kind == "local" and a.retries == 2 and a.max_temp_c == 75


BAD: list[tuple[Any, str]] = [
    ("kind: [ssh", "not valid YAML"),
    ("- just a list", "expected a mapping"),
    ({"name": "x", "kind": "ssh"}, "kind: ssh needs a host"),
    ({"name": "x", "kind": "usb"}, "kind"),
    ({"name": "x", "kind": "local", "colour": "red"}, "colour: unknown field"),
    ({"name": "x", "kind": "local", "host": "h"}, "host only apply to kind: ssh"),
    ({"name": "x", "kind": "local", "threads": 0}, "threads"),
    ({"name": "bad name!", "kind": "local"}, "name: must be"),
    ({"name": "x", "kind": "ssh", "host": "h", "key_file": "/no/such/key"}, "key_file /no/such/key"),
    ({"name": "x", "kind": "local", "lease_s": 0.5}, "lease_s: Input should be greater than"),
    ({"devices": []}, "non-empty list"),
    ({"devices": [{"name": "x", "kind": "local"}], "threads": 4}, "unexpected: threads"),
    ({"devices": [{"name": "x", "kind": "local"}, {"name": "x", "kind": "local"}]}, "used twice"),
    ({"devices": [{"name": "x", "kind": "local"}, {"name": "y", "kind": "ssh"}]}, "devices[1]"),
]


@pytest.mark.parametrize(("content", "expected"), BAD)
def test_profile_errors_name_the_file(tmp_path: Path, content: Any, expected: str) -> None:
    path = tmp_path / "hw.yaml"
    if isinstance(content, str):
        path.write_text(content)
    else:
        write_profile(path, content)
    with pytest.raises(ConfigError) as info:
        load_hardware(path)
    assert str(path) in str(info.value)
    assert expected in str(info.value)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="hardware profile not found"):
        load_hardware(tmp_path / "nope.yaml")
