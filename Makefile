# Every target creates the virtual environment itself, so a fresh clone needs nothing else.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# A pip constraints file the environment is installed under (none: the newest releases allowed).
CONSTRAINTS :=

.PHONY: test test-lowest itest bench lint golden demo clean

# An interpreter older than 3.11 is told at once, before a virtual environment is made of it; and
# the environment is made afresh (--clear), so one left half-made by such an attempt is replaced.
$(STAMP): pyproject.toml $(CONSTRAINTS)
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { \
	  echo "make: this project needs Python 3.11 or newer, and PYTHON=$(PYTHON) is" \
	    "$$(command -v $(PYTHON) >/dev/null && $(PYTHON) -V 2>&1 || echo 'not found'): run make $(or $(MAKECMDGOALS),test) PYTHON=python3.11" >&2; \
	  exit 1; }
	$(PYTHON) -m venv --clear $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]' $(if $(CONSTRAINTS),--constraint $(CONSTRAINTS))
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The suite on the oldest release of each dependency that pyproject.toml allows.
test-lowest:
	$(MAKE) test VENV=.venv-lowest CONSTRAINTS=tests/lowest-versions.txt

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
	rm -rf $(VENV) .venv-lowest build dist .pytest_cache .ruff_cache
