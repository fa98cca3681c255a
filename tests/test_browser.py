"""The report and the dashboard in a real browser: headless Chromium driven by Selenium.

Chromium and its driver come from Debian (`.ci/run` installs them); Selenium is pointed at both, so
selenium-manager never runs and nothing is downloaded. A missing browser fails these tests: CI has one.
The study is built without training (`study_builder`), with real PNG artifacts and the study note.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from study_builder import build_study, demo_trials, make_config

from nas.report import write_study_report

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
REPO = Path(__file__).resolve().parent.parent
WAIT_S = 30


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


@contextmanager
def screenshot_on_failure(driver: webdriver.Chrome, path: Path) -> Iterator[None]:
    """Keep what the browser showed when an assertion or a wait failed."""
    try:
        yield
    except BaseException:
        driver.save_screenshot(str(path))
        raise


def broken_images(driver: webdriver.Chrome) -> list[str]:
    return driver.execute_script(
        "return Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src);")


def severe_console_messages(driver: webdriver.Chrome) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


@pytest.fixture(scope="module")
def demo_results(tmp_path_factory: pytest.TempPathFactory):
    """A study with presets, searched, failed and pruned trials, previews in the artifact store, and its note."""
    root = tmp_path_factory.mktemp("browser")
    config = make_config(root / "results", study="browser-demo")
    build_study(config, demo_trials())
    return config


def test_report_opens_from_a_file_with_every_image(browser, demo_results, tmp_path):
    out = write_study_report(demo_results, tmp_path / "report")
    with screenshot_on_failure(browser, tmp_path / "report-failure.png"):
        browser.get((out / "report.html").as_uri())
        WebDriverWait(browser, WAIT_S).until(lambda d: d.execute_script("return document.readyState") == "complete")
        assert browser.title == "nas report: browser-demo"
        images = browser.find_elements(By.TAG_NAME, "img")
        assert len(images) >= 3 + 5  # pareto, history, importances, and the top trials' previews
        assert broken_images(browser) == []
        assert severe_console_messages(browser) == []
        assert "litedepth-int8" in browser.find_element(By.TAG_NAME, "body").text


@contextmanager
def running_dashboard(results: Path, tmp_path: Path) -> Iterator[str]:
    """`nas dashboard` on a free port, serving the study under `results`; yields its base URL."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    log = tmp_path / "dashboard.log"
    with open(log, "w") as sink:
        server = subprocess.Popen([sys.executable, "-m", "nas", "dashboard", "--results", str(results),
                                   "--port", str(port)], cwd=tmp_path, env=env, stdout=sink, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/studies", timeout=2).read()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"nas dashboard did not answer on {base}:\n{log.read_text()}", pytrace=False)
                time.sleep(0.3)
        assert f"optuna-dashboard: {base}/dashboard/" in log.read_text()  # the URL is printed
        yield base
    finally:
        server.terminate()
        server.wait(timeout=10)


def study_id(base: str, name: str) -> int:
    summaries = json.loads(urllib.request.urlopen(f"{base}/api/studies", timeout=10).read())["study_summaries"]
    (found,) = [s["study_id"] for s in summaries if s["study_name"] == name]
    return found


def shown_note(browser: webdriver.Chrome, base: str, sid: int) -> str:
    """The study's note page (Markdown rendered) once its text is there."""
    browser.get(f"{base}/dashboard/studies/{sid}/note")
    return WebDriverWait(browser, WAIT_S).until(
        lambda d: (text := d.find_element(By.TAG_NAME, "body").text) and "nas study" in text and text)


def loaded_preview(browser: webdriver.Chrome, base: str, sid: int):
    """The first trial preview image on the trials page that has loaded (non-zero natural width)."""
    browser.get(f"{base}/dashboard/studies/{sid}/trials")
    return WebDriverWait(browser, WAIT_S).until(
        lambda d: next((img for img in d.find_elements(By.CSS_SELECTOR, 'img[alt="preview.png"]')
                        if d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img)),
                       None))


@pytest.fixture()
def dashboard(demo_results, tmp_path) -> Iterator[str]:
    with running_dashboard(demo_results.results, tmp_path) as base:
        yield base


def test_dashboard_shows_the_note_and_a_trial_preview(browser, dashboard, tmp_path):
    sid = study_id(dashboard, "browser-demo")
    with screenshot_on_failure(browser, tmp_path / "dashboard-failure.png"):
        body = shown_note(browser, dashboard, sid)
        assert "nas finalize --study browser-demo" in body and "Precision choices" in body
        preview = loaded_preview(browser, dashboard, sid)
        assert browser.execute_script("return arguments[0].naturalWidth", preview) == 96  # the uploaded strip
        assert "/artifacts/" in preview.get_attribute("src")
