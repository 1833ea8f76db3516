# Highway: two commands on a fresh machine (Python 3.11+, gcc, make).
#   make run   create .venv, install Highway (compiling codec), serve on 127.0.0.1:8000
#   make test  the same set-up, then the whole test suite

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Everything that changes what the editable install has to rebuild.
SOURCES := pyproject.toml setup.py $(wildcard codec/*.pyx codec/*.pxd codec/*.c codec/*.h)
PIP := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: run test bench bench-codec bench-barge-in lint format filters clean

run: $(VENV)/.installed-run
	$(BIN)/highway serve

test: $(VENV)/.installed-test
	$(BIN)/pytest

# End-to-end delay, capacity and soak: see benchmarks/e2e.py --help (ARGS="--calls 20").
bench: $(VENV)/.installed-bench
	$(BIN)/python -m benchmarks.e2e $(ARGS)

bench-codec: $(VENV)/.installed-bench
	$(BIN)/python benchmarks/codec_bench.py

bench-barge-in: $(VENV)/.installed-run
	$(BIN)/python -P benchmarks/barge_in.py

# Redesign the resampling filters into codec/filter_taps.h (needs scipy, a test extra).
filters: $(VENV)/.installed-test
	$(BIN)/python codec/design_filters.py

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.installed-test
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The build tools live in the venv so installs skip pip's slow isolated build environment.
$(VENV)/.base:
	@$(PYTHON) -c 'import sys; sys.exit("Highway needs Python 3.11 or newer") if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip 'setuptools>=77' 'cython>=3.1,<4' wheel
	touch $@

$(VENV)/.installed-run: $(VENV)/.base $(SOURCES)
	$(PIP) install --no-build-isolation -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.base $(SOURCES)
	$(PIP) install --no-build-isolation -e '.[test]'
	touch $@ $(VENV)/.installed-run

$(VENV)/.installed-bench: $(VENV)/.base $(SOURCES)
	$(PIP) install --no-build-isolation -e '.[bench]'
	touch $@ $(VENV)/.installed-run

clean:
	rm -rf $(VENV) build *.egg-info codec/*.so codec/_codec.c
