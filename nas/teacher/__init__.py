"""The teacher: a large depth network trained once, whose depth maps are cached for every trial.

A teacher folder holds `teacher.json` (what the teacher is, what it was trained on, its own
validation metrics), the model (`teacher.pt`, a `DepthNet` state dict made by `train_teacher`, or a
user's TorchScript / ONNX file) and `cache/`, the teacher's depth on the training split at one or
more student training resolutions. One module per job:

- `spec`: teacher.json, the folder lock, and the data / cache fingerprints that decide staleness;
- `predictors`: running a teacher of any kind (a registry: DepthNet, TorchScript, ONNX), its metrics;
- `training`: the teacher budgets and the self-managed DepthNet teacher (`ensure_teacher`);
- `register`: a user's TorchScript / ONNX file made into a teacher folder;
- `cache`: the teacher's depth on the training split, rebuilt only when stale;
- `progress`: what the work prints on stderr.
"""

from nas.teacher.cache import TeacherCache, align_to_split, cache_teacher, ensure_cache
from nas.teacher.predictors import TEACHER_KINDS, Predictor, evaluate_teacher
from nas.teacher.register import register_model, resolve_teacher
from nas.teacher.spec import (CACHE_DIR, SPEC_FILE, WEIGHTS_FILE, TeacherKind, TeacherSpec, cache_fingerprint, data_fingerprint,
                   folder_lock, read_spec, write_spec)
from nas.teacher.training import (DEFAULT_BACKBONES, TEACHER_BUDGETS, ensure_teacher, load_init, teacher_arch, teacher_budget,
                       train_teacher)

__all__ = [
    "CACHE_DIR", "DEFAULT_BACKBONES", "SPEC_FILE", "TEACHER_BUDGETS", "TEACHER_KINDS", "WEIGHTS_FILE", "Predictor",
    "TeacherCache", "TeacherKind", "TeacherSpec", "align_to_split", "cache_fingerprint", "cache_teacher",
    "data_fingerprint", "ensure_cache", "ensure_teacher", "evaluate_teacher", "folder_lock", "load_init",
    "read_spec", "register_model", "resolve_teacher", "teacher_arch", "teacher_budget", "train_teacher",
    "write_spec",
]
