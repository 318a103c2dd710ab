# Two entry points for people: `make run` and `make test` (see README). `make bench` for figures.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUN_STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev
# The handler tests run a second time under the serving container's transformers (sagemaker/container.json).
CONTAINER_VENV := .venv-container
CONTAINER_STAMP := $(CONTAINER_VENV)/.installed

CHROMIUM := /usr/bin/chromium
# checkov cannot share .venv: it pins an older boto3 (cfn-lint and actionlint live in .venv).
CHECKOV := .venv-checkov/bin/checkov
NODE := $(shell command -v node || echo /usr/bin/node)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test bench install install-dev clean mutants

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Everything the embedded default needs (dashboard + local captioner; torch==2.13.0 is the CPU wheel here).
$(RUN_STAMP): requirements.txt requirements-local.txt pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -r requirements-local.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $@

$(DEV_STAMP): $(RUN_STAMP) requirements-dev.txt requirements-infra.txt requirements-deploy.txt requirements-toolkit.txt
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	$(BIN)/python -m pip install -q --no-deps -r requirements-toolkit.txt
	touch $@

$(CONTAINER_STAMP): requirements-container.txt requirements-toolkit.txt requirements.txt pyproject.toml
	$(PYTHON) -m venv $(CONTAINER_VENV)
	$(CONTAINER_VENV)/bin/python -m pip install -q -r requirements-container.txt
	$(CONTAINER_VENV)/bin/python -m pip install -q --no-deps -r requirements-toolkit.txt
	$(CONTAINER_VENV)/bin/python -m pip install -q --no-deps -e .
	touch $@

# The browser test drives Debian's Chromium (Playwright cannot download its own browser here).
$(CHROMIUM):
	$(SUDO) apt-get install -y chromium || ($(SUDO) apt-get update && $(SUDO) apt-get install -y chromium)

$(CHECKOV): requirements-checkov.txt
	$(PYTHON) -m venv .venv-checkov
	.venv-checkov/bin/python -m pip install -q -r requirements-checkov.txt
	touch $@

# The CDK app is synthesised by jsii, which runs on Node.js.
$(NODE):
	$(SUDO) apt-get install -y nodejs || ($(SUDO) apt-get update && $(SUDO) apt-get install -y nodejs)

install: $(RUN_STAMP)
install-dev: $(DEV_STAMP) $(CONTAINER_STAMP) $(CHECKOV) $(NODE)

# `make run PORT=8600` serves on another port.
PORT ?= 8501

run: $(RUN_STAMP)
	$(BIN)/streamlit run dashboard/app.py --server.port $(PORT)

test: $(DEV_STAMP) $(CONTAINER_STAMP) $(CHROMIUM) $(CHECKOV) $(NODE)
	$(BIN)/pytest
	SERVING_CONTAINER_VENV=1 $(CONTAINER_VENV)/bin/pytest tests/test_sagemaker_handler.py

bench: $(DEV_STAMP)
	$(BIN)/python bench/run_all.py

# Mutation testing of the core modules (docs/mutation.md): manual, hours on 2 cores (about 10,800 mutants).
# `make mutants MODULES="fetch export"` runs some of them; results are kept in .mutation/.
MODULES ?=
mutants: $(DEV_STAMP)
	$(BIN)/python tests/support/mutation.py $(MODULES)

clean:
	rm -rf $(VENV) .venv-checkov $(CONTAINER_VENV) infra/node_modules infra/cdk.out .pytest_cache test-artifacts .mutation
