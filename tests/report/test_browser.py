"""The report and the dashboard in a real browser: headless Chromium driven by Selenium.

Chromium and its driver come from Debian (`.ci/run` installs them); Selenium is pointed at both, so
selenium-manager never runs and nothing is downloaded. A missing browser fails these tests: CI has one.
The study is built without training (`study_builder`), with real PNG artifacts and the study note.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from helpers.browser import (
    WAIT_S,
    broken_images,
    loaded_preview,
    running_dashboard,
    screenshot_on_failure,
    severe_console_messages,
    shown_note,
    study_id,
)
from helpers.study_builder import build_study, demo_trials, make_config
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from nas.report import write_study_report


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
        assert len(images) >= 2 + 5  # pareto, history and the top trials' previews (7 trials: no importances)
        assert broken_images(browser) == []
        assert severe_console_messages(browser) == []
        assert "litedepth-int8" in browser.find_element(By.TAG_NAME, "body").text


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


def _note_text(browser, base: str, sid: int, number: int, heading: str) -> str:
    """The trials page with trial `number` selected, once its note (Markdown rendered) is shown."""
    browser.get(f"{base}/dashboard/studies/{sid}/trials?numbers={number}")
    return WebDriverWait(browser, WAIT_S).until(
        lambda d: (text := d.find_element(By.TAG_NAME, "body").text) and heading in text and text)


def test_dashboard_shows_each_trials_note(browser, dashboard, tmp_path):
    """Each trial's note: what it is, its figures rounded, why it stopped, and (complete) its preview."""
    sid = study_id(dashboard, "browser-demo")
    with screenshot_on_failure(browser, tmp_path / "trial-note-failure.png"):
        body = _note_text(browser, dashboard, sid, 8, "Trial 8: pruned")
        assert "Why it stopped" in body and "pruned at step 50: estimated score 0.912" in body
        assert "efficientnet_b1 · 5 stages · decoder 128-64-32-24-16" in body

        body = _note_text(browser, dashboard, sid, 4, "Trial 4: complete")
        assert "Final Score: 5.582 (si-RMSE 0.29" in body and "24 ms median" in body
        note_image = WebDriverWait(browser, WAIT_S).until(
            lambda d: next((img for img in d.find_elements(By.CSS_SELECTOR, 'img[src*="/artifacts/"]')
                            if "/artifacts/" in (img.get_attribute("src") or "")
                            and d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img)),
                           None))
        assert note_image is not None
        browser.save_screenshot(str(tmp_path / "trial-note.png"))
        assert broken_images(browser) == []
