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

lint: $(STAMP)
	$(BIN)/ruff check plugins tests
	$(BIN)/ruff format --check plugins tests

# The only writer of golden files: review `git diff tests/golden` before committing.
golden: $(STAMP)
	$(BIN)/python -m tests.golden_writer

# The gateway parser over a bundled sample: text lines for the S3 text tables, then records.
demo: $(STAMP)
	@echo "== text form (what lands in proofpoint_gateway_*_logs), first 6 lines"
	@$(BIN)/ppship gateway parse --format text --timezone America/Chicago examples/gateway-sample.log 2>/dev/null | head -n 6
	@echo
	@echo "== records (NDJSON), first 2"
	@$(BIN)/ppship gateway parse --timezone America/Chicago examples/gateway-sample.log 2>/dev/null | head -n 2
	@echo
	@echo "== counts"
	@$(BIN)/ppship gateway parse --timezone America/Chicago examples/gateway-sample.log 2>&1 >/dev/null

clean:
	rm -rf $(VENV) build dist .pytest_cache .ruff_cache
