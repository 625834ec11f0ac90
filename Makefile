# Two commands on a fresh machine:  make demo   and   make test
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install demo test lint sysdeps bench clean

# The venv is rebuilt only when pyproject.toml changes. torch/torchvision are pinned (see pyproject.toml).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/wardwatch demo

# Debian packages the tests drive: chromium (browser tests through Playwright) and ffmpeg (reference decoder).
sysdeps:
	@if ! command -v chromium >/dev/null || ! command -v ffmpeg >/dev/null; then \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium ffmpeg >/dev/null; fi

lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports

test: install sysdeps lint
	$(BIN)/pytest -q

bench: install sysdeps
	$(BIN)/python benchmarks/attribution.py
	$(BIN)/python benchmarks/decode.py
	$(BIN)/python benchmarks/ingest_cli.py --profile
	$(BIN)/python benchmarks/training.py

clean:
	rm -rf $(VENV) wardwatch-demo .pytest_cache .ruff_cache
