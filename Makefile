# tailormail: `make demo` and `make test` do all set-up from a fresh clone.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUNTIME_STAMP := $(VENV)/.installed-runtime
LINTED := engine plugins tests bench examples tools

.PHONY: demo test install install-runtime lint typecheck unit clean mutate

$(BIN)/python:
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "tailormail needs Python 3.11+"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# What the extras are for: pyproject.toml and docs/guide.md, "Dependencies".
# `make install`: the runtime, the suite's extras (test, which takes postgres, ses, dkim,
# celery and bench) and the developer tools (dev: ruff, mypy, import-linter, mutmut).
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test,dev]'
	touch $(RUNTIME_STAMP) $(STAMP)

# `make demo`: the runtime dependencies only (matplotlib draws the demo's charts).
$(RUNTIME_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $(RUNTIME_STAMP)

install: $(STAMP)

install-runtime: $(RUNTIME_STAMP)

demo: install-runtime
	$(BIN)/tailormail demo

# The layers of docs/architecture.md, checked by import-linter ([tool.importlinter]).
lint: install
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy

# Three pytest workers on two cores: most tests wait on subprocesses, servers and sockets.
PYTEST_WORKERS ?= 3

unit: install
	$(BIN)/pytest -q -n $(PYTEST_WORKERS)

test: lint typecheck unit

# Mutation testing of the critical modules (docs/testing.md): about an hour on 2 cores,
# not part of `make test` or CI. Results accumulate in mutants/; a rerun resumes.
# mutmut comes with the dev extra.
mutate: install
	timeout 4000 $(BIN)/mutmut run --max-children 2 || test $$? -eq 124
	$(BIN)/python tools/mutation_report.py

clean:
	rm -rf $(VENV) demo-run mutants .mypy_cache .ruff_cache .pytest_cache
