# Two commands on a fresh machine: `make demo` and `make test`.
# Both create .venv with pip when it is missing and install the project with what it needs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
CORE_STAMP := $(VENV)/.core-stamp
PIP := $(PY) -m pip install -q --disable-pip-version-check

.PHONY: setup demo test test-windows test-gateway lint typecheck wire-coverage unit integration adversarial e2e e2e-clis bench bench-setup bench-instructions clean

# Everything: every extra and the dev tools (what `make test` needs).
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) -U "pip>=25.1"
	$(PIP) -e ".[mcp,monitor,plot,bench,gateway]" --group dev
	@touch $(STAMP) $(CORE_STAMP)

# The core only (click, filelock, rich): all the demo needs.
$(CORE_STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) -e .
	@touch $(CORE_STAMP)

setup: $(STAMP)

demo: $(CORE_STAMP)
	$(VENV)/bin/pipemesh demo

lint: setup
	$(VENV)/bin/ruff format --check src tests
	$(VENV)/bin/ruff check src tests

typecheck: setup
	$(VENV)/bin/mypy src tests/typing

# The sans-IO wire module stays at 100% branch coverage (STYLE.md section 7).
wire-coverage: setup
	$(VENV)/bin/coverage run --branch --source=pipemesh.wire,pipemesh.codec -m pytest -q tests/unit/test_wire.py tests/unit/test_codec.py
	$(VENV)/bin/coverage report --fail-under=100 -m

test: lint typecheck wire-coverage
	$(VENV)/bin/pytest

# Windows CPython 3.13 under Wine (scripts/windows-env builds it once into .cache/windows/).
test-windows: setup
	./scripts/windows-env >/dev/null
	PIPEMESH_WIN_REQUIRED=1 $(VENV)/bin/pytest tests/windows

# Hosts bridged over NATS (part of `make test` too): netns hosts when root, else loopback.
test-gateway: setup
	$(VENV)/bin/pytest tests/gateway

unit: setup
	$(VENV)/bin/pytest tests/unit

integration: setup
	$(VENV)/bin/pytest tests/integration

# Real processes under SIGKILL/SIGSTOP, incl. the 60 s chaos soak (PIPEMESH_SOAK_S overrides).
adversarial: setup
	$(VENV)/bin/pytest -s tests/adversarial

# The real agent CLIs (exact versions in tests/e2e/package.json, the rest pinned by its
# package-lock.json) go to an ignored cache folder, reinstalled only when the pins change;
# the suite runs them against a fake model.
E2E_NPM := .cache/e2e-npm
E2E_STAMP := $(E2E_NPM)/.installed-stamp

$(E2E_STAMP): tests/e2e/package.json tests/e2e/package-lock.json
	@mkdir -p $(E2E_NPM)
	cp tests/e2e/package.json tests/e2e/package-lock.json $(E2E_NPM)/
	@# npm install, not npm ci: npm ci rejects this lock because it lacks opencode's
	@# packages for other platforms (npm leaves those out of the lock it writes).
	cd $(E2E_NPM) && npm install --no-audit --no-fund --loglevel=error
	@touch $@

e2e-clis: $(E2E_STAMP)

e2e: setup e2e-clis
	$(VENV)/bin/pytest tests/e2e

# Redis and valgrind (for `pipemesh bench --instructions`) come from Debian's packages;
# the harness says so in its output when one cannot be had.
bench-setup: setup
	@for pkg in redis-server:redis-server valgrind:valgrind; do \
	  cmd=$${pkg%%:*}; deb=$${pkg##*:}; \
	  command -v $$cmd >/dev/null 2>&1 || (command -v apt-get >/dev/null 2>&1 && \
	    (apt-get install -y -q $$deb >/dev/null 2>&1 || \
	     (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q $$deb >/dev/null 2>&1)) || \
	    echo "note: $$deb could not be installed; the bench says so where it needs it"); \
	done

bench: bench-setup
	$(VENV)/bin/pipemesh bench

# Instructions per 64 B hop under callgrind: a guard that does not move with the load.
bench-instructions: bench-setup
	$(VENV)/bin/pipemesh bench --instructions

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
