# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_DIR ?= demo

.PHONY: demo demo-whales test test-fast bench bench-gpu clean

$(BIN)/photoid: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(BIN)/photoid

demo: $(BIN)/photoid
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo.sh $(DEMO_DIR)

demo-whales: $(BIN)/photoid
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo_whales.sh $(DEMO_DIR)/whales

# Tests run in TEST_WORKERS processes (pytest-xdist); each loads TensorFlow and trains the session's tiny runs it
# needs, so more workers than cores, or than the memory holds at about 1.5 GB each, gains nothing. 1: one process.
TEST_WORKERS ?= 2

test: $(BIN)/photoid
	$(BIN)/python -m pytest -n $(TEST_WORKERS)

# The quick loop between changes: every test but the slow ones (pyproject.toml says which those are).
test-fast: $(BIN)/photoid
	$(BIN)/python -m pytest -n $(TEST_WORKERS) -m "not slow"

bench: $(BIN)/photoid
	$(BIN)/python benchmarks/run_all.py

# On a machine with a GPU: ef1b7 and ef2l at 512 px, mixed precision off and on (section of benchmarks/results.md).
bench-gpu: $(BIN)/photoid
	$(BIN)/python benchmarks/gpu_models.py

clean:
	rm -rf $(DEMO_DIR) runs .pytest_cache
