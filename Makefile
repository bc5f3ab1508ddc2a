# The two commands a newcomer runs: `make demo` and `make test`. Both create
# .venv, install the pinned tools, build the extension (incrementally: the
# CMake build directory is kept in build/) and then run.
#
# `make cuda-build` does the same in .venv-cuda with a CUDA build of torch,
# so that the CUDA kernels are compiled (and the suite run under that torch)
# on a machine without a GPU; .ci/run runs it after `make test`.

PYTHON ?= python3
STAMPS := .stamps
SOURCES := $(shell find csrc python -type f -not -name '*.pyc' -not -name '_C*.so' -not -name '_build_info.py') \
	CMakeLists.txt pyproject.toml

# The torch each environment builds and tests against. The CPU wheel is the
# one this machine has on disk; an unpinned torch would pull a CUDA build.
TORCH := torch==2.13.0
CUDA_TORCH := torch==2.14.1

VENV := .venv
BIN := $(VENV)/bin
CUDA_VENV := .venv-cuda
CUDA_BIN := $(CUDA_VENV)/bin

.PHONY: help demo test cuda-build bench dev lint clean

help:
	@echo "make demo        build, then summarise and draw the built-in models"
	@echo "make test        build, lint (ruff, mypy, clang-format), then the whole suite"
	@echo "make cuda-build  build against torch 2.14.1 (CUDA 13) in .venv-cuda, then the suite"
	@echo "make bench       torchwalk bench, then the pytest-benchmark suites"
	@echo "make dev         build the extension next to the sources (PYTHONPATH=python)"
	@echo "make lint        ruff, mypy and clang-format alone"
	@echo "make clean       remove the build directories"

demo: $(STAMPS)/installed
	$(BIN)/torchwalk summary
	$(BIN)/torchwalk tree seed --name net
	$(BIN)/torchwalk summary deepseek-v3 --depth 3

test: $(STAMPS)/installed lint
	$(BIN)/python -m pytest tests

cuda-build: $(STAMPS)/cuda-installed
	$(CUDA_BIN)/python -c "import torch, torchwalk; print('torchwalk imports under torch', torch.__version__, 'CUDA', torch.version.cuda, '| stats paths:', torchwalk._C.stats_paths())"
	$(CUDA_BIN)/python -m pytest tests

# The tools the benchmarks compare with (requirements-bench.txt) are installed
# in the same pip run as torch and the dev requirements, so that pip keeps torch.
bench: $(STAMPS)/installed $(STAMPS)/bench-deps
	$(BIN)/torchwalk bench
	$(BIN)/python -m pytest benchmarks

$(STAMPS)/bench-deps: $(STAMPS)/venv requirements-bench.txt
	$(BIN)/python -m pip install --quiet $(TORCH) -r requirements-dev.txt -r requirements-bench.txt
	@touch $@

lint: $(STAMPS)/venv
	$(BIN)/ruff check python tests benchmarks examples
	$(BIN)/ruff format --check python tests benchmarks examples
	$(BIN)/mypy
	$(BIN)/clang-format --dry-run --Werror $(wildcard csrc/*/*.cpp csrc/*/*.h csrc/*/*/*.cpp csrc/*/*/*.h csrc/*/*/*.cu)

# torch is installed in the same pip run as the rest, so that nothing else
# can make pip pick another torch.
$(STAMPS)/venv: requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH) -r requirements-dev.txt
	@mkdir -p $(STAMPS) && touch $@

$(STAMPS)/cuda-venv: requirements-dev.txt
	test -x $(CUDA_BIN)/python || $(PYTHON) -m venv $(CUDA_VENV)
	$(CUDA_BIN)/python -m pip install --quiet --upgrade pip
	$(CUDA_BIN)/python -m pip install --quiet $(CUDA_TORCH) -r requirements-dev.txt
	@mkdir -p $(STAMPS) && touch $@

# --no-build-isolation: build against the torch in the environment, not a
# newer one that pip would fetch into an isolated build environment. Each
# environment has its own CMake build directory.
$(STAMPS)/installed: $(STAMPS)/venv $(SOURCES)
	$(BIN)/python -m pip install --quiet --no-build-isolation --no-deps .
	@touch $@

# The quick loop (docs/contributing.md): the installed extension and its
# build record copied next to the sources, for PYTHONPATH=python runs.
dev: $(STAMPS)/installed
	# --remove-destination: a new file, not one rewritten under a process that maps it
	cp --remove-destination $$($(BIN)/python -c "import torchwalk._C as c, torchwalk._build_info as b; print(c.__file__, b.__file__)") python/torchwalk/

$(STAMPS)/cuda-installed: $(STAMPS)/cuda-venv $(SOURCES)
	$(CUDA_BIN)/python -m pip install --quiet --no-build-isolation --no-deps -Cbuild-dir=build/cuda .
	@touch $@

clean:
	rm -rf build $(STAMPS)
