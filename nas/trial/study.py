"""Optuna storage, sampler, pruner and artifact store of a search, set up from the run config.

Optuna is used as it is: one `optuna.Study` in an RDB storage (SQLite file by default, PostgreSQL
for many workers), heartbeats so a killed worker's trial is failed and re-queued, the artifact
store beside it for `.tflite` files, previews and arch JSON.
"""

from __future__ import annotations

import secrets
import warnings
from pathlib import Path

import optuna
from optuna.artifacts import Boto3ArtifactStore, FileSystemArtifactStore

# Heartbeats, metric names and the retry callback are stable in practice; keep users' logs readable.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

from nas.config import RunConfig
from nas.infra.db import hide_password
from nas.infra.outage import ResilientRDBStorage
from nas.errors import ConfigError
from nas.infra.db import DB_CONNECT_TIMEOUT_S
from nas.infra.db import setup_lock
from nas.infra.storage import check_database
from nas.trial.record import keep_accuracy_floor

SCORE_METRICS = ["final_score"]
PARETO_METRICS = ["si_rmse", "latency_ms"]


def open_storage(url: str, heartbeat: bool = True, heartbeat_s: int = 60,
                 grace_s: int = 180) -> optuna.storages.RDBStorage:
    """RDB storage; with heartbeats, a trial whose worker died is failed and enqueued once more.

    A running trial beats every `heartbeat_s`; one silent for `grace_s` is failed by the next worker
    that starts a trial, and retried once (Optuna's `RetryHeartbeatStaleTrialCallback`).
    """
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    kwargs = {}
    if heartbeat:
        kwargs = {"heartbeat_interval": heartbeat_s, "grace_period": grace_s,
                  "heartbeat_stale_trial_callback": optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)}
    if url.startswith("sqlite"):
        engine_kwargs = {"connect_args": {"timeout": 60}}
    else:  # pre-ping: connections that died with a restarted server are replaced, not failed
        engine_kwargs = {"pool_pre_ping": True, "connect_args": {"connect_timeout": DB_CONNECT_TIMEOUT_S}}
    return ResilientRDBStorage(url, engine_kwargs=engine_kwargs, **kwargs)


def make_pruner(name: str) -> optuna.pruners.BasePruner:
    if name == "none":
        return optuna.pruners.NopPruner()
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)


def open_study(config: RunConfig) -> optuna.Study:
    """Create the study or load it (resume) from the configured storage.

    Under `setup_lock`: workers started together on an empty database would otherwise race to create
    Optuna's tables (a known Optuna race) and the study's metric names.
    """
    pareto = config.objective == "pareto"
    with setup_lock(config.storage_url):
        storage = open_storage(config.storage_url, heartbeat_s=config.heartbeat_s, grace_s=config.grace_s)
        exists = config.study in optuna.get_all_study_names(storage)
        seed = sampler_seed(config, joining=exists)
        study = optuna.create_study(
            storage=storage, study_name=config.study, load_if_exists=True,
            sampler=(optuna.samplers.RandomSampler(seed=seed) if config.sampler == "random"
                     else make_tpe_sampler(seed, config.trials)),
            pruner=make_pruner("none" if pareto else config.pruner),  # Optuna cannot prune multi-objective studies
            directions=["minimize", "minimize"] if pareto else ["maximize"],
        )
        if study.metric_names is None:  # the dashboard's axis and column names; a resumed study keeps its own
            study.set_metric_names(PARETO_METRICS if pareto else SCORE_METRICS)
        keep_accuracy_floor(study, config.max_si_rmse, created=not exists)
    return study


def make_tpe_sampler(seed: int, trials: int) -> optuna.samplers.TPESampler:
    """TPE as Optuna advises for this kind of space: multivariate with groups, constant liar.

    The space is conditional (per-stage parameters exist only up to the sampled depth, `rfdb_esa` only
    with RFDB blocks): `multivariate=True, group=True` models parameters jointly within each set that
    appears together instead of one by one, which is what lets TPE learn, say, that a small input
    scale pays only with a narrow decoder. `constant_liar=True` keeps workers sharing a study from
    sampling the same region while their trials are still running.
    """
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=tpe_startup_trials(trials), multivariate=True,
                                      group=True, constant_liar=True)


def tpe_startup_trials(trials: int) -> int:
    """Random trials before TPE models the study: a third of the run, 3 to 10 (Optuna's default is 10).

    With Optuna's 10, a run of fewer than about 10 trials (every CPU run: `benchmarks/search_quality.md`) never leaves random sampling. Enqueued presets and screened candidates count.
    """
    return max(3, min(10, trials // 3))


# The seed each (storage, study, seed) got in this process: reopening the study here (a benchmark opens it,
# then `run_search` opens it again) keeps the sampler it started with.
_SEEDS: dict[tuple[str, str, int], int] = {}


def sampler_seed(config: RunConfig, joining: bool) -> int:
    """`config.seed` in the process that creates the study; a fresh seed in every process that joins or
    resumes it.

    Samplers seeded alike draw the same first points: a second worker (or a rerun) would train the
    architectures the first one already tried. Only the study's first run is reproducible from `seed`.
    """
    key = (config.storage_url, config.study, config.seed)
    if key not in _SEEDS:
        _SEEDS[key] = secrets.randbits(32) if joining else config.seed
    return _SEEDS[key]


def load_study(storage_url: str, study_name: str) -> optuna.Study:
    """An existing study, for reading (no heartbeats: nothing runs); ConfigError when there is none."""
    check_database(storage_url, create=False)  # opening a missing SQLite file would create it
    try:
        return optuna.load_study(study_name=study_name, storage=open_storage(storage_url, heartbeat=False))
    except KeyError:
        raise ConfigError(None, f"no study {study_name!r} in {hide_password(storage_url)}") from None


ArtifactStore = FileSystemArtifactStore | Boto3ArtifactStore


def artifact_store(config: RunConfig, create: bool = True) -> ArtifactStore | None:
    """Where trials' files go: Optuna's own stores, a folder (a shared mount when workers run on many
    machines) or an S3-compatible bucket (`artifacts: s3://BUCKET`).

    A bucket is checked before any work starts (ConfigError saying what is wrong). `create` False (reading a
    study): None when the folder does not exist, since nothing was ever stored there.
    """
    location = config.artifacts_location
    if location.startswith("s3://"):
        return s3_artifact_store(location)
    folder = Path(location)
    if not create and not folder.is_dir():
        return None
    folder.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(str(folder))


def s3_artifact_store(url: str) -> Boto3ArtifactStore:
    """Optuna's Boto3ArtifactStore on the bucket of `s3://BUCKET`, once the bucket answers.

    Endpoint and credentials come from wherever boto3 looks (AWS_ENDPOINT_URL for MinIO, Ceph or another
    S3-compatible server; AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or ~/.aws): nothing of them is stored
    or printed here. Optuna's store writes each artifact under its id at the bucket's top level, so a
    key prefix cannot be honoured: give the study a bucket of its own.
    """
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    if not bucket or prefix.strip("/"):
        raise ConfigError(None, f"artifact store {url!r}: give s3://BUCKET (Optuna's S3 store writes at the "
                                "bucket's top level; a key prefix is not supported)")
    client = boto3.client("s3", config=Config(connect_timeout=10, retries={"max_attempts": 3, "mode": "standard"}))
    try:
        client.head_bucket(Bucket=bucket)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "?")
        why = {"404": "no such bucket (create it first)", "NoSuchBucket": "no such bucket (create it first)",
               "403": "access denied (check the credentials and the bucket policy)"}.get(code, f"error {code}")
        raise ConfigError(None, f"artifact store {url}: {why}") from None
    except BotoCoreError as exc:  # no credentials, endpoint unreachable, ...
        raise ConfigError(None, f"artifact store {url}: {exc}") from None
    return Boto3ArtifactStore(bucket, client=client)
