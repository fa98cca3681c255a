"""Preview images of the report's trials, written into its folder so the page opens from there alone.

Where the trial's `.tflite` and a validation frame are at hand, the preview is drawn afresh by
`depth_previews`; otherwise the trial's own `preview.png` is copied out of the artifact store. Both are
the one preview of `nas.data.preview` (input | ground truth | prediction | error, labelled, one depth
colour bar in metres shared by ground truth and prediction, unknown pixels grey), as `nas finalize` draws it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from optuna.artifacts import FileSystemArtifactStore, download_artifact, get_all_artifact_meta
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial

from nas.infra.console import err
from nas.report.depth_previews import depth_previews

PREVIEW_NAME = "preview.png"  # what nas.trial.objective uploads: `nas.data.preview`, first validation frame
MODEL_NAME = "model.tflite"


def fetch_artifact(trial: FrozenTrial, storage: BaseStorage, store: FileSystemArtifactStore, name: str, target: Path
           ) -> bool:
    """Download the trial's artifact `name` to `target`; False when the trial has none or it is gone."""
    meta = next((m for m in get_all_artifact_meta(trial, storage=storage) if m.filename == name), None)
    if meta is None:
        return False
    target.unlink(missing_ok=True)  # download_artifact refuses to overwrite a file from an earlier report
    try:
        download_artifact(artifact_store=store, file_path=str(target), artifact_id=meta.artifact_id)
    except ArtifactNotFound:
        return False
    return True


def _draw(trial: FrozenTrial, storage: BaseStorage, store: FileSystemArtifactStore, frame: tuple[np.ndarray, np.ndarray],
          target: Path) -> bool:
    """Run the trial's `.tflite` on the validation frame and draw the four-panel preview."""
    from nas.export.tflite_convert import TFLiteModel

    with tempfile.TemporaryDirectory(prefix="nas-report-") as tmp:
        model_path = Path(tmp) / MODEL_NAME
        if not fetch_artifact(trial, storage, store, MODEL_NAME, model_path):
            return False
        try:
            model = TFLiteModel(model_path)
            rgb, depth_mm = frame
            if model.input_hw != rgb.shape[:2]:
                return False
            depth_previews(target, rgb[None], depth_mm[None], model.predict, names=[f"trial {trial.number}"])
        except (ValueError, RuntimeError, OSError) as exc:  # a truncated or corrupt file: this trial only
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            err.print(f"warning: trial {trial.number}: its {MODEL_NAME} in the artifact store cannot be run "
                      f"({first}); its stored preview is used instead", markup=False, highlight=False)
            return False
    return True


def copy_previews(trials: list[FrozenTrial], storage: BaseStorage, store: FileSystemArtifactStore | None, out: Path,
                  frame: tuple[np.ndarray, np.ndarray] | None = None) -> dict[int, str]:
    """Write each trial's preview into `out` as `preview-trial-N.png`; returns trial number -> file name.

    `frame` (RGB H×W×3 uint8, depth H×W mm) is a validation frame at deployment resolution: with it the
    preview is drawn from the trial's model, else the stored preview is copied. A trial with neither
    is left out (the page says so).
    """
    written: dict[int, str] = {}
    if store is None:
        return written
    for t in trials:
        target = out / f"preview-trial-{t.number}.png"
        if (frame is not None and _draw(t, storage, store, frame, target)) or \
                fetch_artifact(t, storage, store, PREVIEW_NAME, target):
            written[t.number] = target.name
    return written
