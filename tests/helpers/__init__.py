"""Helpers the tests share: real servers, device profiles, built studies, a browser, workers. Fixtures that
use them live in conftest.py; tests import the helpers from here, never from conftest or another test."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]  # the checkout: search_spaces/, hardware/, pyproject.toml
