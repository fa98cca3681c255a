"""Typed configuration of a run: defaults <- config file (YAML) <- CLI flags.

Every field is checked before any work starts; a bad value names the file it came from.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from nas.arch import MAX_DEPLOY_SIDE
from nas.errors import ConfigError, not_utf8
from nas.infra.db import hide_password
from nas.metrics import ScoreRule

REPO_ROOT = Path(__file__).resolve().parent.parent


class Budget(BaseModel):
    """How much training a trial (or a final model) gets, and at which resolution.

    For candidates, `train_height` × `train_width` is the *internal* resolution trained at: each
    candidate sees crops of full-resolution frames at the pixel scale it will run at on the device
    (`nas.train.batches`). For the teacher it is the size whole frames are resized to.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    train_height: int
    train_width: int
    steps: int
    batch_size: int
    lr: float = 2e-3
    train_limit: int | None = None  # at most this many training images (None: all)
    val_limit: int | None = None  # validation images for the TFLite score (None: all)
    eval_points: int = 3  # validation reports during training, for the pruner


BUDGETS: dict[str, Budget] = {
    # Tests and a first look: seconds of training on tiny images.
    "smoke": Budget(name="smoke", train_height=96, train_width=128, steps=12, batch_size=4, train_limit=16,
                    val_limit=2, eval_points=2),
    # The embedded default on a CPU: a few minutes per trial, enough to rank architectures roughly.
    "quick": Budget(name="quick", train_height=120, train_width=160, steps=150, batch_size=8, val_limit=8,
                    eval_points=3),
    # A GPU search, and `nas finalize`: longer, at half deployment resolution.
    "full": Budget(name="full", train_height=240, train_width=320, steps=4000, batch_size=16, lr=1e-3,
                   eval_points=5),
}

# Budgets at which `time_before_training: auto` converts and times a candidate's untrained graph: worth one
# extra conversion where training costs several (quick, full), not where it costs seconds (smoke). Not a
# Budget field: a budget's fields are the training recipe that teachers and re-trainings are keyed by.
TIME_UNTRAINED_AT = frozenset({"quick", "full"})


@dataclass(frozen=True)
class TeacherSetting:
    """What the distillation teacher needs of a run, and nothing else of it: whether to distil, which teacher
    (a folder, or None for the self-managed one under `results/teacher/<budget>`), the data and the seed."""

    distill: bool
    teacher: Path | None
    results: Path
    budget: str
    data_root: Path
    seed: int

    @property
    def folder(self) -> Path:
        # One self-managed teacher per budget: `nas finalize --budget full` does not overwrite the teacher a
        # quick search distils from (and the next search does not retrain it).
        return Path(self.teacher) if self.teacher is not None else self.results / "teacher" / self.budget


# Every setting belongs to one concern. A config file may group its keys under these section names or give
# them flat, as the command-line flags are; both read the same (`load_config`), and `nas run --help` and
# docs/ name them flat.
SECTIONS: dict[str, tuple[str, ...]] = {
    "search": ("space", "study", "trials", "timeout", "objective", "pruner", "sampler", "seed", "baselines",
               "max_screened"),
    "score": ("score_alpha", "score_c", "max_si_rmse"),
    "screen": ("latency_screen", "bound_si_rmse", "bound_margin", "latency_key", "time_before_training"),
    "training": ("budget", "teacher", "distill", "distill_lambda", "pretrained"),
    "data": ("data", "deploy_height", "deploy_width", "synth_train", "synth_val", "synth_test", "synth_seed",
             "calibration_images"),
    "device": ("hardware", "trust_new_host_keys", "parity_tolerance", "parity_rtol", "int8_drift_margin",
               "sustained_s", "sustained_top", "reference_every", "reference_tolerance"),
    "workers": ("storage", "results", "artifacts", "heartbeat_s", "grace_s", "outage_s"),
}


class RunConfig(BaseModel):
    """Everything `nas run` needs; field names are the config-file keys and the CLI flags."""

    # No float setting means anything as NaN or infinity (`.nan`, `.inf` in YAML): "a finite number" for all.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    data: Path | None = Field(None, description="data set root; none: synthetic data under results/data")
    space: Path = REPO_ROOT / "search_spaces" / "mai2021.yaml"
    hardware: Path = REPO_ROOT / "hardware" / "local.yaml"
    study: str = Field("depth-nas", min_length=1)
    storage: str | None = Field(None, description="Optuna storage URL; none: sqlite:///RESULTS/nas.db")
    trials: int = Field(6, ge=1)
    timeout: float | None = Field(None, gt=0)
    budget: Literal["smoke", "quick", "full"] = "quick"
    teacher: Path | None = None
    distill: bool = True
    distill_lambda: float = Field(0.5, ge=0)
    objective: Literal["score", "pareto"] = "score"
    pruner: Literal["none", "median", "hyperband"] = "median"
    sampler: Literal["tpe", "random"] = "tpe"
    seed: int = Field(0, description="sampler seed of the run that creates the study; workers that join or "
                                      "resume it draw their own, so they do not repeat its first points")
    results: Path = Path("results")
    artifacts: str | None = Field(None, description="where trials' files go (.tflite, preview, arch JSON): a folder "
                                  "(default RESULTS/artifacts; a shared mount for many machines) or s3://BUCKET, "
                                  "an S3-compatible store found as boto3 finds it (AWS_ENDPOINT_URL, AWS_* keys, "
                                  "~/.aws)")
    baselines: list[str] | Literal["all", "none"] = Field(
        default_factory=lambda: ["litedepth"],
        description="seed presets the study starts from: all (every preset in every precision of the space), "
                    "none, or names (`litedepth`, `fastdepth-int8`, ...); presets outside the space are skipped")
    deploy_height: int = Field(480, ge=32, le=MAX_DEPLOY_SIDE)
    deploy_width: int = Field(640, ge=32, le=MAX_DEPLOY_SIDE)
    score_alpha: float = Field(10.0, gt=0)
    score_c: float = Field(1.0, gt=0)
    max_si_rmse: float | None = Field(
        None, gt=0, description="accuracy floor: a complete trial whose TFLite si-RMSE is above it is infeasible "
                                "(an Optuna constraint), so it is never the study's best, the one finalized or the "
                                "bar of the latency screen, and TPE steers away from it; fixed when the study is "
                                "created; none: no floor, the Final Score alone decides")
    parity_tolerance: float = Field(1e-3, gt=0)  # metres, plus parity_rtol × depth
    parity_rtol: float = Field(1e-4, ge=0)
    # An int8 model whose si-RMSE is worse than its float32 twin's by more than this has its loss located: the
    # trial records the layer where the error grows most, `nas finalize` the whole table (nas/export/int8_drift.py).
    int8_drift_margin: float = Field(0.01, gt=0, lt=1)
    # A pool that agrees with itself (`nas.hardware.agreement`): every device times the reference model at a
    # worker's start and every `reference_every` latency measurements; one off by more than
    # `reference_tolerance` from its own first figure or the pool's median is taken out until it agrees again.
    reference_every: int = Field(10, ge=0, description="latency measurements between the pool's reference "
                                                       "checks (each device times the reference model); 0: no checks")
    reference_tolerance: float = Field(0.10, gt=0, lt=1, description="share a device's reference figure may be "
                                       "off its own first figure or the pool's median before it is taken out")
    synth_train: int = Field(160, ge=1)
    synth_val: int = Field(16, ge=1)
    synth_test: int = Field(16, ge=0)
    synth_seed: int = 0  # the embedded data set's seed; separate from `seed` so a new search seed reuses it
    trust_new_host_keys: bool = False
    sustained_s: float | None = Field(
        None, gt=0, description="seconds of sustained load (the model invoked without pause: latency and "
                                "temperature over time) that `nas finalize` times the shipped model under, and a "
                                "search its top trials under (sustained_top); none: 60 s on a device (kind: ssh), "
                                "10 s on this machine (kind: local)")
    sustained_top: int = Field(
        0, ge=0, description="time a trial again under sustained load when it enters the study's top N by Final "
                             "Score (one run of sustained_s per such trial; recorded and shown, not scored); "
                             "0: never in the search")
    # Many workers: a running trial beats every heartbeat_s; one silent for grace_s (its worker was killed)
    # is failed by the next trial to start in any worker, and retried once.
    heartbeat_s: int = Field(60, ge=1, description="seconds between a running trial's heartbeats")
    grace_s: int = Field(180, ge=1, description="seconds without a heartbeat before a trial counts as dead")
    outage_s: float = Field(600, ge=0, description="how long a worker waits (with back-off) for a study database "
                                                   "that went away, e.g. a PostgreSQL restart, before giving up")
    # Latency first: screen candidates whose best possible score cannot beat the study's best.
    latency_screen: bool = True
    bound_si_rmse: float | None = Field(None, gt=0, description="optimistic si-RMSE of the screen; none: "
                                        "the best si-RMSE seen (or the teacher's, if lower) minus bound_margin")
    bound_margin: float = Field(0.03, ge=0)
    latency_key: Literal["graph", "file"] = Field("graph", description="graph: time an architecture once per "
                                                  "device; file: time every trained copy again")
    time_before_training: bool | Literal["auto"] = Field(
        "auto", description="convert and time a candidate's untrained graph before training it when its latency "
                            "is not known yet: the screen and the pruner then work on the measured figure, which "
                            "the latency cache serves to the trained model, at one extra conversion per new graph; "
                            "true: every new graph; false: predict it from the study's measurements; auto "
                            "(default): at the quick and full budgets, every new graph whose predicted latency "
                            "leaves the screen's decision open (none at smoke, whose training costs less than a "
                            "conversion)")
    calibration_images: int = Field(32, ge=4, description="training images that calibrate int8 models")
    max_screened: int | None = Field(
        None, ge=1, description="candidates a run may screen out before training before it stops (a space with "
                                "nothing under its cap or faster than the best); none: max(200, 40 × trials), "
                                "since random draws of the mission space meet its compute cap about once in 30")
    pretrained: Literal["auto", "none", "imagenet"] | Path = Field(
        "auto", description="encoder starting weights: auto (ImageNet where the Hugging Face cache has them, else "
                            "random), none, imagenet (download if needed), or a folder of <backbone>.safetensors/.pth")

    @field_validator("study")
    @classmethod
    def _study_name(cls, value: str) -> str:
        if value != value.strip():
            raise ValueError(f"{value!r} has spaces around it; a study name is looked up exactly")
        return value

    @field_validator("baselines")
    @classmethod
    def _known_presets(cls, value: list[str] | str) -> list[str] | str:
        from nas.presets import preset_variants

        if isinstance(value, list):
            known = set(preset_variants())
            if unknown := [v for v in value if v not in known]:
                raise ValueError(f"unknown preset(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return value

    @model_validator(mode="after")
    def _grace_outlasts_heartbeat(self) -> RunConfig:
        if self.grace_s <= self.heartbeat_s:
            raise ValueError(f"grace_s ({self.grace_s}) must exceed heartbeat_s ({self.heartbeat_s}), "
                             "or a live worker's trial would be taken for dead")
        return self

    @property
    def teacher_setting(self) -> TeacherSetting:
        return TeacherSetting(distill=self.distill, teacher=self.teacher, results=self.results, budget=self.budget,
                              data_root=self.data_root, seed=self.seed)

    @property
    def screened_limit(self) -> int:
        """`max_screened`, or its default for this run's trial count."""
        return self.max_screened or max(200, 40 * self.trials)

    @property
    def score_rule(self) -> ScoreRule:
        """The Final Score of this run, from `score_alpha` and `score_c`."""
        return ScoreRule(alpha=self.score_alpha, c=self.score_c)

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{(self.results / 'nas.db').as_posix()}"

    @property
    def storage_shown(self) -> str:
        """The storage URL as printed (logs, notes, reports): no password."""
        return hide_password(self.storage_url)

    @property
    def data_root(self) -> Path:
        return self.data or self.results / "data"

    @property
    def train_budget(self) -> Budget:
        return BUDGETS[self.budget]

    @property
    def times_before_training(self) -> bool:
        """Whether candidates are timed untrained: only where the figure is used (a Final Score study with
        the screen or a pruner) and reused (latency keyed by graph)."""
        wanted = self.budget in TIME_UNTRAINED_AT if self.time_before_training == "auto" else self.time_before_training
        return (wanted and self.objective == "score" and self.latency_key == "graph"
                and (self.latency_screen or self.pruner != "none"))

    @property
    def artifacts_location(self) -> str:
        """The artifact store: a folder path, or an s3:// URL."""
        return self.artifacts or (self.results / "artifacts").as_posix()


def _describe(error: ValidationError, flags: set[str] = frozenset()) -> str:
    """One line: each bad setting and what is wrong; a setting given as a command-line flag named as the flag."""
    parts = []
    for e in error.errors():
        where = ".".join(str(p) for p in e["loc"]) or "file"
        if e["loc"] and e["loc"][0] in flags:
            where = "--" + where.replace("_", "-")
        parts.append(f"{where}: {e['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)


def read_yaml(path: Path) -> Any:
    """Parsed YAML of `path`, or ConfigError naming the file."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(path, "file does not exist")
    if path.is_dir():
        raise ConfigError(path, "is a folder, not a file")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise not_utf8(path, exc) from None
    except OSError as exc:
        raise ConfigError(path, f"cannot read the file ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(path, f"not valid YAML ({str(exc).splitlines()[0]})") from exc


def flatten_sections(data: dict[str, Any], path: Path) -> dict[str, Any]:
    """A config file's settings as flat keys: those grouped under a section name (`screen: {bound_margin:
    0.05}`) join the flat ones; a key under the wrong section, or one given twice, is bad input."""
    flat = {k: v for k, v in data.items() if k not in SECTIONS}
    for section in SECTIONS.keys() & data.keys():
        group = data[section]
        if not isinstance(group, dict):
            raise ConfigError(path, f"{section}: expected a mapping of settings ({', '.join(SECTIONS[section])})")
        for key, value in group.items():
            if key not in SECTIONS[section]:
                home = next((s for s, keys in SECTIONS.items() if key in keys), None)
                where = f"; it belongs under {home}" if home else ""
                raise ConfigError(path, f"{section}.{key}: not a setting of {section}{where}")
            if key in flat:
                raise ConfigError(path, f"{key} is given twice (flat and under {section})")
            flat[key] = value
    return flat


def load_config(config_file: Path | None = None, **overrides: Any) -> RunConfig:
    """Defaults, then the config file's keys, then the non-None `overrides` (CLI flags)."""
    values: dict[str, Any] = {}
    if config_file is not None:
        data = read_yaml(config_file) or {}
        if not isinstance(data, dict):
            raise ConfigError(config_file, "expected a mapping of settings at the top level")
        values.update(flatten_sections(data, config_file))
    flags = {k: v for k, v in overrides.items() if v is not None}
    values.update(flags)
    try:
        return RunConfig(**values)
    except ValidationError as exc:
        from_file = any(not e["loc"] or e["loc"][0] not in flags for e in exc.errors())
        raise ConfigError(config_file if from_file else None, _describe(exc, set(flags))) from None
