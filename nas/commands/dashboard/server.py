"""`nas dashboard`: optuna-dashboard over the study database with the artifact store attached.

Both things that commonly go wrong are checked before the server starts, so they end as one line
(ConfigError, exit 2) instead of a traceback from inside the web server: a storage that cannot be
opened (or an embedded database that does not exist yet), and a port another process holds.
"""

from __future__ import annotations

import socket

import optuna

from nas.config import RunConfig
from nas.infra.db import hide_password
from nas.infra.storage import check_database
from nas.errors import ConfigError
from nas.trial.study import artifact_store, open_storage


def usable_storage(url: str) -> optuna.storages.RDBStorage:
    """The storage, opened and read once; ConfigError naming the URL when it cannot be used."""
    check_database(url, create=False)  # opening a missing SQLite file would create an empty one and serve nothing
    try:
        storage = open_storage(url, heartbeat=False)
        storage.get_all_studies()
    except Exception as exc:  # SQLAlchemy's driver and schema errors, Optuna's version check: all "unusable"
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(None, f"cannot open the storage {hide_password(url)}: {first_line}") from None
    return storage


def check_port_free(host: str, port: int) -> None:
    """Bind the address once, as the server will (address reuse on), so a taken port is one clear line."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConfigError(None, f"cannot serve on host {host!r}: {exc.strerror}") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            raise ConfigError(None, f"port {port} on {host} is not free ({exc.strerror}); pass --port") from None


def dashboard_url(host: str, port: int) -> str:
    return f"http://{host}:{port}/dashboard/"


def serve(config: RunConfig, host: str, port: int) -> None:
    """Serve until interrupted; trials show their `.tflite`, preview PNG and arch JSON."""
    import optuna_dashboard

    storage = usable_storage(config.storage_url)
    check_port_free(host, port)
    store = artifact_store(config)
    print(f"optuna-dashboard: {dashboard_url(host, port)} ({config.storage_shown}, "
          f"artifacts {config.artifacts_location})", flush=True)
    optuna_dashboard.run_server(storage, host=host, port=port, artifact_store=store)
