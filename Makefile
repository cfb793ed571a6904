# One entry point for users and CI. `make paper` regenerates every figure; `make test` runs the tests.
# Both build the virtual environment first (torch 2.13.0 CPU wheel, then the package with its extras).
PROFILE ?= cpu
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PAPER_DATA_DIR ?= $(abspath ../shared/data)

.PHONY: setup paper test test-all lab browse browser-deps bench clean-notebooks help

help:
	@echo "make setup   build .venv (torch 2.13.0 first, then paper_lib[dev,lab])"
	@echo "make paper   run every notebook with papermill (PROFILE=cpu by default; smoke, cpu, paper)"
	@echo "make test    run the test suite on TEST_WORKERS=2 processes (slow tests: make test-all)"
	@echo "make lab     open the notebooks in JupyterLab"
	@echo "make browse  serve the run's feature browser on http://127.0.0.1:8000 (built by make paper)"
	@echo "make bench   run the matching benchmark (16,384^2 pairs, 1M positions); numbers in runs/benchmark/benchmarks.json"

setup: $(STAMP)

# torch is installed first and pinned through a constraints file, so no later resolve pulls a CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	echo "torch==2.13.0" > constraints.txt
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev,lab]'
	$(PY) -m ipykernel install --sys-prefix --name feature-tracking --display-name "feature-tracking" >/dev/null
	touch $@

paper: $(STAMP)
	$(PY) -m paper_lib.pipeline --profile $(PROFILE)

# Two pytest-xdist workers share one smoke run folder (tests/conftest.py): on 2 cores the suite took 12m38s in one
# process and 10m31s in two. TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(PY) -m pytest -q -ra --durations=15 -n $(TEST_WORKERS)

test-all: $(STAMP)
	$(PY) -m pytest -q -ra --runslow -n $(TEST_WORKERS)

# Position mode carries the 60 s target; token mode at that scale takes minutes (run it with MODES="position token").
MODES ?= position
bench: $(STAMP)
	$(PY) benchmarks/bench_matching.py --modes $(MODES)

# The feature browser that make paper wrote (built now if it is missing), served on localhost.
PORT ?= 8000
browse: $(STAMP)
	$(PY) -m paper_lib.browser --profile $(PROFILE) --serve --port $(PORT)

# Headless Chromium and its driver for the browser tests (tests/test_browser_ui.py, run by make test-all); Debian.
SUDO ?= $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser-deps:
	$(SUDO) apt-get install -y chromium chromium-driver

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/

# Strip outputs and execution counts from the committed notebooks.
clean-notebooks: $(STAMP)
	$(PY) -m paper_lib.notebook_tools strip notebooks/*.ipynb
