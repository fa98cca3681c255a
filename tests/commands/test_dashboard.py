"""`nas dashboard` refuses, in one line, a storage it cannot serve and a port that is taken."""

from __future__ import annotations

import socket

import pytest
from typer.testing import CliRunner

from nas.cli import app
from nas.commands.dashboard.server import check_port_free, usable_storage
from nas.errors import ConfigError
from nas.infra.console import EXIT_BAD_INPUT


def test_missing_embedded_database_is_one_line(tmp_path):
    result = CliRunner().invoke(app, ["dashboard", "--results", str(tmp_path)])
    assert result.exit_code == EXIT_BAD_INPUT
    assert f"no study database at {tmp_path / 'nas.db'}; run `nas run` first" in " ".join(result.output.split())
    assert "Traceback" not in result.output and not (tmp_path / "nas.db").exists()


def test_unusable_storage_is_named(tmp_path):
    broken = tmp_path / "nas.db"
    broken.write_text("not a database")
    with pytest.raises(ConfigError, match=f"cannot open the storage sqlite:///{broken}"):
        usable_storage(f"sqlite:///{broken}")


def test_taken_port_is_one_line(tmp_path):
    from helpers.study_builder import build_study, demo_trials, make_config

    build_study(make_config(tmp_path), demo_trials()[:1])
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(ConfigError, match=f"port {port} on 127.0.0.1 is not free"):
            check_port_free("127.0.0.1", port)
        result = CliRunner().invoke(app, ["dashboard", "--results", str(tmp_path), "--port", str(port)])
    assert result.exit_code == EXIT_BAD_INPUT and "is not free" in result.output
    check_port_free("127.0.0.1", port)  # released: free again
