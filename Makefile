# The two commands: `make run` runs the governance demo into .controlplane-demo/ on its first
# start, then serves the API and the dashboard over it; `make test` runs the whole test suite.
# Both create .venv when it is missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench bench-quick bench-api clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
# torch first, pinned: that is the CPU build (a range would fetch a multi-GB CUDA build);
# the tests train real models, so the training extra is part of the test install.
	$(BIN)/python -m pip install --quiet 'torch==2.13.0'
	$(BIN)/python -m pip install --quiet -e '.[dev,train]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/controlplane demo --serve

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

bench-api: $(STAMP)
	$(BIN)/python -m benchmarks.api_load --db both

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
