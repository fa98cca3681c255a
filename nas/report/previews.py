"""Preview images copied out of the artifact store, so the report opens from its folder alone."""

from __future__ import annotations

from pathlib import Path

from optuna.artifacts import FileSystemArtifactStore, download_artifact, get_all_artifact_meta
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial

PREVIEW_NAME = "preview.png"  # what nas.objective uploads: input | ground truth | prediction


def copy_previews(trials: list[FrozenTrial], storage: BaseStorage, store: FileSystemArtifactStore | None, out: Path
                  ) -> dict[int, str]:
    """Copy each trial's preview into `out` as `preview-trial-N.png`; returns trial number -> file name.

    A trial without a preview, or whose file is gone from the store, is left out (the page says so).
    """
    copied: dict[int, str] = {}
    if store is None:
        return copied
    for t in trials:
        meta = next((m for m in get_all_artifact_meta(t, storage=storage) if m.filename == PREVIEW_NAME), None)
        if meta is None:
            continue
        target = out / f"preview-trial-{t.number}.png"
        target.unlink(missing_ok=True)  # download_artifact refuses to overwrite a file from an earlier report
        try:
            download_artifact(artifact_store=store, file_path=str(target), artifact_id=meta.artifact_id)
        except ArtifactNotFound:
            continue
        copied[t.number] = target.name
    return copied
