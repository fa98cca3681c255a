"""Headless Chromium (Debian's chromium and chromium-driver; nothing is downloaded) and what the browser tests
read from a page."""

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
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from helpers import REPO

CHROMIUM = Path("/usr/bin/chromium")


CHROMEDRIVER = Path("/usr/bin/chromedriver")




WAIT_S = 30


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
