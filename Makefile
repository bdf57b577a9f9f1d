# Everything a new machine needs is created from the pinned sets in requirements/.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=
# The suite plus every docstring example of the four packages (and of the test helpers).
PYTEST_PATHS ?= tests jobcommon trainer batch executor docker/image_report.py

.PHONY: help venv demo test lint format bench chaos images clean

help:
	@echo "make demo    run the whole flow end to end on an embedded local GCS"
	@echo "make test    lint and run the test suite"
	@echo "make bench   run the benchmarks, write bench/RESULTS.md"
	@echo "make images  build the three images with buildah and smoke-test them"
	@echo "make lint    ruff check + ruff format --check"

$(STAMP): requirements/dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet -r requirements/dev.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: venv
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test: lint
	$(PY) -m pytest --doctest-modules $(PYTEST_PATHS) $(PYTEST_ARGS)

demo: venv
	$(PY) demo/run.py $(DEMO_ARGS)

bench: venv
	$(PY) bench/run.py $(BENCH_ARGS)

chaos: venv
	$(PY) -m pytest tests/chaos $(PYTEST_ARGS)

images: venv
	bash docker/test-images.sh

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache demo-output
