# make run   - set up on first use, then run the daemon in the foreground
# make test  - set up on first use, then lint and run the whole test suite
# make bench - speed, accuracy and memory against peers (see README.md, "Benchmark")

# Empty: scripts/find-python picks python3.13 ... python3.10 from PATH (make PYTHON=... to choose).
PYTHON ?=
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
UNAME  := $(shell uname -s)
# MLX's CPU wheel bundles a slow reference BLAS; preload OpenBLAS for in-process runs (tests).
BLAS    = $(shell $(BIN)/python -c 'from watcherd.blas import find_openblas; print(find_openblas() or "")')

.PHONY: setup run test lint bench clean system-deps test-deps

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile scripts/find-python
	@# The platform and an interpreter first: an Intel Mac, an old macOS or a missing
	@# Python is said in one sentence, before anything is installed.
	@python=$$(PYTHON="$(PYTHON)" scripts/find-python) && \
		$(MAKE) --no-print-directory system-deps && \
		{ test -x $(BIN)/python || { echo "$$python -m venv $(VENV)"; "$$python" -m venv $(VENV); }; }
ifeq ($(UNAME),Linux)
	# mlx-whisper depends on torch (for conversion only). Pin the CPU build so pip does not
	# pull several GB of CUDA packages.
	$(BIN)/pip install --quiet "torch==2.13.0"
endif
	$(BIN)/pip install --quiet -e ".[dev,diarize,postgres]"
	$(BIN)/watcherd prepare
	touch $(STAMP)

# OpenBLAS for MLX on Linux, and the PostgreSQL server the tests start a throwaway
# cluster of (root or passwordless sudo installs them; otherwise say so).
system-deps:
ifeq ($(UNAME),Linux)
	@if ! ls /usr/lib/*/libopenblas.so.0 /usr/lib/*/openblas-pthread/libopenblas.so.0 2>/dev/null | grep -q .; then \
		if [ "$$(id -u)" = 0 ]; then SUDO=""; elif sudo -n true 2>/dev/null; then SUDO="sudo"; \
		else echo "WARNING: install libopenblas0-pthread for ~40x faster MLX on CPU"; exit 0; fi; \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq libopenblas0-pthread; \
	fi
endif

run: setup
	$(BIN)/watcherd run

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# PostgreSQL for the tests, which start a throwaway server (the shared-queue store); not
# for `make run`, whose queue is SQLite.
test-deps:
ifeq ($(UNAME),Linux)
	@if ! ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | grep -q .; then \
		if [ "$$(id -u)" = 0 ]; then SUDO=""; elif sudo -n true 2>/dev/null; then SUDO="sudo"; \
		else echo "WARNING: install postgresql: the tests start a PostgreSQL server"; exit 0; fi; \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends postgresql; \
	fi
endif

test: setup lint test-deps
	LD_PRELOAD="$(BLAS)" $(BIN)/pytest

bench: setup
	$(BIN)/pip install --quiet -e ".[bench]"
	LD_PRELOAD="$(BLAS)" $(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
