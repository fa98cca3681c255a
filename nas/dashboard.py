"""`nas dashboard`: optuna-dashboard over the study database with the artifact store attached."""

from __future__ import annotations

from optuna.artifacts import FileSystemArtifactStore

from .config import RunConfig
from .study import open_storage


def serve(config: RunConfig, host: str, port: int) -> None:
    """Serve until interrupted; trials show their `.tflite`, preview PNG and arch JSON."""
    import optuna_dashboard

    config.artifact_dir.mkdir(parents=True, exist_ok=True)
    print(f"optuna-dashboard on http://{host}:{port} ({config.storage_url}, artifacts {config.artifact_dir})")
    optuna_dashboard.run_server(open_storage(config.storage_url, heartbeat=False), host=host, port=port,
                                artifact_store=FileSystemArtifactStore(str(config.artifact_dir)))
