# Two commands do everything on a fresh clone: `make segment` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
WB     := $(VENV)/bin/workbench
STAMP  := $(VENV)/.stamp-setup

.PHONY: setup test test-fast lint data bench clean-data help segment classify segment-generated generate

help:
	@echo "make setup    create .venv and install the workbench (once; later calls are instant)"
	@echo "make test     lint, then run the test suite (make test-fast: without the end-to-end tests)"
	@echo "make lint     ruff over the whole tree (configured in pyproject.toml)"
	@echo "make segment  default water-segmentation run on Blue Marble tiles (offline, ~10 min on 2 cores)"
	@echo "make classify default water / coast / land tile classifier on Blue Marble (offline, <10 min)"
	@echo "make segment-generated  water segmentation on real vs real + generated tiles (MODEL=DIR: the generator)"
	@echo "make generate one generated tile for each of a few named places with the default model"
	@echo "make data     build the Blue Marble default catalog under data/"
	@echo "make bench    print throughput ratios against baselines measured in the same run"

# The stamp depends on pyproject.toml so a changed dependency list reinstalls.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

# Two pytest workers (the machines have 2 cores; most tests use one); work stealing evens out
# the long end-to-end tests. TEST_WORKERS=0 runs everything in one process.
TEST_WORKERS ?= 2
test: lint
	$(PY) -m pytest -q $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist worksteal)

lint: $(STAMP)
	$(PY) -m ruff check .

# The inner loop while developing: everything but the end-to-end tests marked slow.
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

data: $(STAMP)
	$(WB) data bluemarble

# TorchGeo is a bench-only peer: installed once, beside the workbench, never imported by it.
BENCH_STAMP := $(VENV)/.stamp-bench
$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install -q -e ".[bench]"
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(PY) -m workbench.bench

clean-data:
	rm -rf data/bluemarble data/catalog.sqlite data/catalog.sqlite-wal data/catalog.sqlite-shm

# Default water segmentation, offline: build the Blue Marble catalog (idempotent), train the
# 'water' preset (it scores the test split and prints the per-class table; the run folder is
# kept in runs/latest-segmentation), then predict the whole mosaic GeoTIFF and score it against
# the GSHHS mask on the test split's coastal tiles (5-95 % water): the quality goal's figure.
WBHOME = $${WORKBENCH_HOME:-.}
segment: $(STAMP)
	$(WB) data bluemarble
	$(WB) segment train --preset water
	RUN=$$(cat $(WBHOME)/runs/latest-segmentation) && $(WB) segment predict --run "$$RUN" \
	  --input $(WBHOME)/data/bluemarble/mosaic.tif --out "$$RUN/mosaic_pred.tif" \
	  --truth $(WBHOME)/data/bluemarble/mosaic_mask.tif --split test --water-min 0.05 --water-max 0.95

# Default tile classification, offline: the 'water-coast-land' preset (labels from the GSHHS
# water fraction; it scores the geographic test split and prints the report), then every Blue
# Marble tile gets its predicted label and score in the catalog, ready for
#   workbench segment train --where "pred_label = 'coast' AND pred_score > 0.9"
classify: $(STAMP)
	$(WB) data bluemarble
	$(WB) classify train --preset water-coast-land
	$(WB) classify predict --run latest --source bluemarble

# A generated tile for each of a few named places (prompts/places.yaml) with the committed
# default model, offline and on CPU in seconds: PNG + GeoTIFF under generated/places, catalog
# rows with source 'generated'. Opens nothing: the table and the last line say where they are.
generate: $(STAMP)
	$(WB) generate --prompts prompts/places.yaml --out $(WBHOME)/generated/places --no-progress

# Do generated tiles help segmentation? Train the 'water' preset on real Blue Marble tiles, generate
# 1024 tiles at its train places with the default generator (MODEL=DIR or a generation run for
# another), pseudo-label them with that run, train again on real + generated tiles for the same
# number of steps, and print both runs' test IoU (experiment.json and panel.png under runs/experiments/).
segment-generated: $(STAMP)
	$(WB) data bluemarble
	$(WB) generate seg-experiment $(if $(MODEL),--model "$(MODEL)")
