# Two commands do everything on a fresh clone: `make segment` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
WB     := $(VENV)/bin/workbench
STAMP  := $(VENV)/.stamp-setup

.PHONY: setup test data bench clean-data help

help:
	@echo "make setup    create .venv and install the workbench (once; later calls are instant)"
	@echo "make test     run the test suite"
	@echo "make data     build the Blue Marble default catalog under data/"
	@echo "make bench    print throughput ratios against baselines measured in the same run"

# The stamp depends on pyproject.toml so a changed dependency list reinstalls.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

data: $(STAMP)
	$(WB) data bluemarble

bench: $(STAMP)
	$(PY) -m pip install -q -e ".[bench]"
	$(PY) -m workbench.bench

clean-data:
	rm -rf data/bluemarble data/catalog.sqlite data/catalog.sqlite-wal data/catalog.sqlite-shm
