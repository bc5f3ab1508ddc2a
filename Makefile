# The two commands a newcomer runs: `make demo` and `make test`. Both create
# .venv, install the pinned tools, build the extension (incrementally: the
# CMake build directory is kept in build/) and then run.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMPS := .stamps
SOURCES := $(shell find csrc python -type f -not -name '*.pyc') CMakeLists.txt pyproject.toml

.PHONY: demo test bench lint clean

demo: $(STAMPS)/installed
	$(BIN)/torchwalk summary
	$(BIN)/torchwalk tree seed --name net
	$(BIN)/torchwalk summary deepseek-v3 --depth 3

test: $(STAMPS)/installed lint
	$(BIN)/python -m pytest tests

# The comparisons with Lightning and accelerate need them installed (they are
# benchmark-only dependencies, pinned next to torch so pip keeps it).
bench: $(STAMPS)/installed $(STAMPS)/bench-deps
	$(BIN)/torchwalk bench
	$(BIN)/python -m pytest benchmarks

$(STAMPS)/bench-deps: $(STAMPS)/venv requirements-bench.txt
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt -r requirements-bench.txt
	@touch $@

lint: $(STAMPS)/venv
	$(BIN)/ruff check python tests benchmarks examples
	$(BIN)/ruff format --check python tests benchmarks examples
	$(BIN)/mypy
	$(BIN)/clang-format --dry-run --Werror $(wildcard csrc/*/*.cpp csrc/*/*.h csrc/*/*/*.cpp csrc/*/*/*.h csrc/*/*/*.cu)

$(STAMPS)/venv: requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	@mkdir -p $(STAMPS) && touch $@

# --no-build-isolation: build against the torch in .venv, not a newer one
# that pip would fetch into an isolated build environment.
$(STAMPS)/installed: $(STAMPS)/venv $(SOURCES)
	$(BIN)/python -m pip install --quiet --no-build-isolation --no-deps .
	@touch $@

clean:
	rm -rf build $(STAMPS)
