# The two commands of the README. Each sets up .venv (idempotent) and then does its job.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup run test test-fast lint-imports clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

setup: $(STAMP)

## run: the main job on the embedded default (synthetic data, local device, SQLite results/nas.db)
run: $(STAMP)
	$(VENV)/bin/nas run --timeout 720  # 6 trained trials; no trial starts after 12 minutes of search

## lint-imports: the layer contracts of pyproject.toml (commands > trial > building blocks > infra > domain)
lint-imports: $(STAMP)
	$(VENV)/bin/lint-imports

## test: the layer contracts, then the whole suite (slow conversion and end-to-end tests included); CI runs this
test: lint-imports
	$(PY) -m pytest -q

## test-fast: the layer contracts, then the suite without the tests marked slow
test-fast: lint-imports
	$(PY) -m pytest -q -m "not slow"

clean:
	rm -rf results/* .pytest_cache
