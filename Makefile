# Everything installs itself into .venv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build (it lies on this project's machines). On a GPU machine: make TORCH="torch==2.13.0" with
# pip's CUDA index, or install torch into .venv yourself first.
TORCH ?= torch==2.13.0

.PHONY: run test test-fast lint docs docs-check bench reproduce clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

run: $(VENV)/.installed  ## the main job: edge-popup MLP on the embedded digits data set
	$(VENV)/bin/supermask train

test: $(VENV)/.installed  ## the whole test suite (exit 5, "no tests ran", counts as a failure)
	$(PY) -m pytest -q; rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest ran no tests"; exit 1; fi; exit $$rc

test-fast: $(VENV)/.installed  ## everyday work: the suite without its slow end-to-end tests (about a minute)
	$(PY) -m pytest -q -m "not slow"

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests benchmarks experiments docs
	$(VENV)/bin/ruff format --check src tests benchmarks experiments docs
	$(VENV)/bin/mypy src
	$(MAKE) docs-check

docs: $(VENV)/.installed  ## regenerate docs/reference/ from the docstrings, dataclasses and parser
	$(PY) docs/build.py

docs-check: $(VENV)/.installed  ## fail on a stale reference page, a broken link or a missing docstring
	$(PY) docs/build.py --check

bench: $(VENV)/.installed  ## benchmarks (not tests): prints medians and ratios
	$(PY) benchmarks/run_all.py
	$(PY) benchmarks/selection.py --reps 10
	$(PY) benchmarks/overhead.py
	$(PY) benchmarks/methods_step.py --reps 10
	$(PY) benchmarks/load_speed.py
	$(PY) benchmarks/cpu_bf16.py

reproduce: $(VENV)/.installed  ## the experiments of docs/RESULTS.md (long; resumable)
	experiments/mnist_fc.sh
	experiments/cifar10_conv.sh
	experiments/methods.sh
	experiments/supsup.sh
	experiments/transfer.sh
	experiments/precision.sh
	experiments/paper_schedule.sh

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
