# The two commands: `make run` starts the control plane on the embedded default (SQLite under
# .controlplane/), `make test` runs the whole test suite. Both create .venv when it is missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench bench-quick clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/controlplane serve

test: $(STAMP)
	$(BIN)/ruff check controlplane tests benchmarks migrations dashboard
	$(BIN)/python -m pytest -n 2 --dist loadfile -q

lint: $(STAMP)
	$(BIN)/ruff check controlplane tests benchmarks migrations dashboard
	$(BIN)/ruff format --check controlplane tests benchmarks migrations dashboard

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run --db both

bench-quick: $(STAMP)
	$(BIN)/python -m benchmarks.run --db both --quick

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
