# Two entry points for people: `make run` and `make test` (see README). `make bench` for figures.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUN_STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev

CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test bench install install-dev clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Everything the embedded default needs (dashboard + local captioner; torch==2.13.0 is the CPU wheel here).
$(RUN_STAMP): requirements.txt requirements-local.txt pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -r requirements-local.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $@

$(DEV_STAMP): $(RUN_STAMP) requirements-dev.txt
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	touch $@

# The browser test drives Debian's Chromium (Playwright cannot download its own browser here).
$(CHROMIUM):
	$(SUDO) apt-get install -y chromium || ($(SUDO) apt-get update && $(SUDO) apt-get install -y chromium)

install: $(RUN_STAMP)
install-dev: $(DEV_STAMP)

run: $(RUN_STAMP)
	$(BIN)/streamlit run dashboard/app.py

test: $(DEV_STAMP) $(CHROMIUM)
	$(BIN)/pytest

bench: $(DEV_STAMP)
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache test-artifacts
