"""The S3 artifact store, against a real S3-compatible server on 127.0.0.1 (moto's standalone server).

Workers on several machines share trials' files through a shared folder or an S3-compatible bucket
(Optuna's Boto3ArtifactStore); the endpoint and credentials come from boto3's usual environment.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import boto3
import optuna
import pytest
import yaml
from helpers import REPO
from helpers.devices import free_port
from moto.server import ThreadedMotoServer
from optuna.artifacts import download_artifact, upload_artifact

from nas.config import load_config
from nas.errors import ConfigError
from nas.trial.study import artifact_store


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture()
def s3_env(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """boto3's environment pointed at the local server (dummy keys: moto accepts any)."""
    env = {"AWS_ENDPOINT_URL": s3_endpoint, "AWS_ACCESS_KEY_ID": "test-key-id", "AWS_SECRET_ACCESS_KEY": "test-secret",
           "AWS_DEFAULT_REGION": "us-east-1"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def make_bucket(name: str) -> None:
    boto3.client("s3").create_bucket(Bucket=name)


def test_files_round_trip_through_the_bucket(s3_env, tmp_path):
    make_bucket("round-trip")
    store = artifact_store(load_config(None, results=tmp_path, artifacts="s3://round-trip"))
    source = tmp_path / "model.tflite"
    source.write_bytes(os.urandom(4096))
    study = optuna.create_study()
    trial = study.ask()
    artifact_id = upload_artifact(artifact_store=store, file_path=str(source), study_or_trial=trial)
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket="round-trip").get("Contents", [])]
    assert keys == [artifact_id]
    back = tmp_path / "back.tflite"
    download_artifact(artifact_store=store, file_path=str(back), artifact_id=artifact_id)
    assert back.read_bytes() == source.read_bytes()
    assert not (tmp_path / "artifacts").exists()  # nothing went to the default folder


@pytest.mark.parametrize("url, words", [
    ("s3://no-such-bucket", "no such bucket"),
    ("s3://round-trip/some/prefix", "a key prefix is not supported"),
    ("s3://", "give s3://BUCKET"),
])
def test_a_bad_bucket_is_a_clear_error(s3_env, tmp_path, url, words):
    with pytest.raises(ConfigError, match=words):
        artifact_store(load_config(None, results=tmp_path, artifacts=url))


@pytest.mark.slow
def test_a_search_stores_its_files_in_the_bucket_and_the_report_reads_them(s3_env, tmp_path):
    """`nas run --artifacts s3://BUCKET`, then `nas report` copies the preview back out of the bucket; a missing
    bucket stops `nas run` before any work, with one line and no traceback."""
    make_bucket("study-files")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "space": str(REPO / "search_spaces" / "smoke.yaml"), "budget": "smoke", "trials": 1, "study": "s3",
        "results": str(tmp_path / "results"), "distill": False, "baselines": "none",
        "synth_train": 8, "synth_val": 2, "synth_test": 1}))
    env = {**os.environ, **s3_env, "PYTHONPATH": str(REPO)}

    def nas(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "nas", *args], capture_output=True, text=True, env=env,
                              cwd=tmp_path)

    bad = nas("run", "--config", str(config), "--artifacts", "s3://missing-bucket")
    assert bad.returncode != 0 and "no such bucket" in bad.stderr and "Traceback" not in bad.stderr + bad.stdout
    assert not (tmp_path / "results" / "data").exists()  # stopped before the data set was made

    run = nas("run", "--config", str(config), "--artifacts", "s3://study-files")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Traceback" not in run.stdout + run.stderr
    assert "--artifacts s3://study-files" in run.stdout  # the browse hint keeps the store
    assert not (tmp_path / "results" / "artifacts").exists()
    objects = boto3.client("s3").list_objects_v2(Bucket="study-files").get("Contents", [])
    assert len(objects) == 3  # model.tflite, preview.png, arch JSON
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'results' / 'nas.db'}")
    trial = optuna.load_study(study_name="s3", storage=storage).best_trial
    tflite = boto3.client("s3").get_object(Bucket="study-files", Key=next(
        m.artifact_id for m in optuna.artifacts.get_all_artifact_meta(trial, storage=storage)
        if m.filename.endswith(".tflite")))["Body"].read()
    assert len(tflite) == trial.user_attrs["tflite_bytes"]

    report = nas("report", "--study", "s3", "--results", str(tmp_path / "results"), "--artifacts", "s3://study-files",
                 "--out", str(tmp_path / "report"))
    assert report.returncode == 0, report.stderr
    assert list((tmp_path / "report").glob("preview-trial-*.png"))
