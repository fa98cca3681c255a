"""Fixtures every test folder shares: a real OpenSSH server, tiny models, study databases, a headless browser.

The helpers behind them live in `helpers/` (tests import helpers from there, never from this file).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.browser import CHROMEDRIVER, CHROMIUM
from helpers.devices import POSTGRES_URL, Sshd, running_sshd
from helpers.outage import fresh_database
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """The test sshd, for the whole session."""
    with running_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


@pytest.fixture(scope="session")
def sshd_without_sftp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """A second test sshd that offers no SFTP subsystem."""
    with running_sshd(tmp_path_factory.mktemp("sshd_nosftp"), sftp=False) as server:
        yield server


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 16x16 float32 conv net as .tflite: each invoke takes microseconds."""
    from nas.hardware.reference import build_reference_model

    return build_reference_model(tmp_path_factory.mktemp("model") / "tiny.tflite", 16, 16, 8)


@pytest.fixture(scope="session")
def tiny_model_b(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second tiny model with other bytes (another sha256)."""
    from nas.hardware.reference import build_reference_model

    return build_reference_model(tmp_path_factory.mktemp("model_b") / "tiny_b.tflite", 16, 16, 4)


@pytest.fixture()
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'nas.db'}"


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The PostgreSQL test database; unreachable is a failure with the reason, not a skip."""
    import sqlalchemy

    from nas.infra.db import make_engine

    engine = make_engine(POSTGRES_URL)
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("select 1"))
    except Exception as exc:
        pytest.fail(f"PostgreSQL at {POSTGRES_URL} is needed for the lease tests "
                    f"(set NAS_TEST_POSTGRES_URL): {exc}", pytrace=False)
    finally:
        engine.dispose()
    return POSTGRES_URL


@pytest.fixture()
def fresh_postgres_url(postgres_url: str) -> Iterator[str]:
    """An empty PostgreSQL database of its own (Optuna's tables not created yet), dropped afterwards."""
    with fresh_database(postgres_url) as url:
        yield url


@pytest.fixture()
def browser() -> Iterator[webdriver.Chrome]:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not path.is_file():
            pytest.fail(f"{path} not found: the browser tests need Debian's chromium and chromium-driver "
                        "(`apt-get install -y chromium chromium-driver`, as .ci/run does)", pytrace=False)
    options = Options()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()
