# Two commands on a fresh machine: `make demo` and `make test`.
# Both create .venv with pip when it is missing and install the project with what it needs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: setup demo test test-windows lint typecheck wire-coverage unit integration bench bench-setup clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -U "pip>=25.1"
	$(PY) -m pip install -q --disable-pip-version-check -e ".[mcp,monitor,bench]" --group dev
	@touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(VENV)/bin/pipemesh demo

lint: setup
	$(VENV)/bin/ruff format --check src tests
	$(VENV)/bin/ruff check src tests

typecheck: setup
	$(VENV)/bin/mypy src tests/typing

# The sans-IO wire module stays at 100% branch coverage (STYLE.md section 7).
wire-coverage: setup
	$(VENV)/bin/coverage run --branch --source=pipemesh.wire -m pytest -q tests/unit/test_wire.py
	$(VENV)/bin/coverage report --fail-under=100 -m

test: lint typecheck wire-coverage
	$(VENV)/bin/pytest

# Windows CPython 3.13 under Wine (scripts/windows-env builds it once into .cache/windows/).
test-windows: setup
	./scripts/windows-env >/dev/null
	PIPEMESH_WIN_REQUIRED=1 $(VENV)/bin/pytest tests/windows

unit: setup
	$(VENV)/bin/pytest tests/unit

integration: setup
	$(VENV)/bin/pytest tests/integration

# Redis comes from Debian's packages; the harness says so in its table when it cannot be had.
bench-setup: setup
	@command -v redis-server >/dev/null 2>&1 || (command -v apt-get >/dev/null 2>&1 && \
	  (apt-get install -y -q redis-server >/dev/null 2>&1 || \
	   (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q redis-server >/dev/null 2>&1)) || \
	  echo "note: redis-server could not be installed; the Redis row will say so")

bench: bench-setup
	$(VENV)/bin/pipemesh bench

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
