# Every target creates the virtual environment itself, so a fresh clone needs nothing else.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test itest bench lint golden demo clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The shipped agent configs run by the real agents in containers: needs a Docker engine.
itest: $(STAMP)
	$(BIN)/python -m pytest -q -m docker -rs

bench: $(STAMP)
	$(BIN)/python -m tests.bench.gateway_parse
	$(BIN)/python -m tests.bench.s3_sink
	$(BIN)/python -m tests.bench.tap_fetch
	$(BIN)/python -m tests.bench.pod_stream
	$(BIN)/python -m tests.bench.relay
	$(BIN)/python -m tests.bench.assembly

lint: $(STAMP)
	$(BIN)/ruff check plugins tests
	$(BIN)/ruff format --check plugins tests

# The only writer of golden files: review `git diff tests/golden tests/golden_assembly` before committing.
golden: $(STAMP)
	$(BIN)/python -m tests.golden_writer

# The whole job on local stand-ins: local S3, TAP and PoD simulators, the relay; all eight tables.
demo: $(STAMP)
	$(BIN)/ppship demo

clean:
	rm -rf $(VENV) build dist .pytest_cache .ruff_cache
