"""`nas dashboard`: optuna-dashboard over the study database with the artifact store. The server set-up is
`server.py`, imported when the command runs so that `nas --help` stays fast."""

from __future__ import annotations

from typing import Annotated

import typer

from nas.commands.options import Artifacts, Results, Storage
from nas.config import load_config


def dashboard_cmd(storage: Storage = None, results: Results = None, artifacts: Artifacts = None,
                  port: Annotated[int, typer.Option(help="port to serve on")] = 8080,
                  host: Annotated[str, typer.Option(help="address to serve on (0.0.0.0: every interface)")]
                  = "127.0.0.1") -> None:
    """optuna-dashboard over the study database (default results/nas.db), with the artifact store; prints the URL."""
    from nas.commands.dashboard.server import serve

    serve(load_config(None, storage=storage, results=results, artifacts=artifacts), host, port)
