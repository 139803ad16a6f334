# Fleetbox — two commands on a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test test-unit test-integration test-e2e package bench clean venv

venv: $(STAMP)

# The venv is rebuilt whenever a requirements file changes.
$(STAMP): requirements.txt requirements-dev.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Fleetbox needs Python 3.11, found " + sys.version' 
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade "pip<26.3"
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $(STAMP)

## run: start the embedded local stack (moto, chalice local, worker loop)
run: $(STAMP)
	exec $(PY) -m infra.local

## test: every test (unit, integration over moto, end-to-end on the real local stack, packaging)
test: $(STAMP)
	$(PY) -m pytest

test-unit: $(STAMP)
	$(PY) -m pytest tests/unit

test-integration: $(STAMP)
	$(PY) -m pytest tests/integration

test-e2e: $(STAMP)
	$(PY) -m pytest tests/e2e

## package: the CloudFormation template + Lambda bundle for stage prod, in build/package
# chalice needs a region only to spell the IAM service principal (same in every commercial
# region); a YAML merge template makes it write YAML, hence sam.yaml.
package: $(STAMP)
	rm -rf build/package
	FLEETBOX_STAGE=prod AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-us-east-1} \
	    $(VENV)/bin/chalice package --stage prod --template-format yaml \
	    --merge-template infra/aws/resources.yaml build/package
	@echo "template: build/package/sam.yaml  bundle: build/package/deployment.zip"

## bench: every benchmark under bench/ (each prints its figures and a baseline ratio; bench/_*.py are their helpers)
bench: $(STAMP)
	@for b in bench/[!_]*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf build .fleetbox .pytest_cache
