# Every target works on a fresh machine with only Python: `make test` installs first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test lint sweep bench experiments clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[test]'
	touch $(STAMP)

test: install
	$(PY) -m pytest -n 2

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# `make sweep ARGS='--optimizer adam --lr 1e-3:1e-1:5'` passes options through; a second
# `make sweep` with no ARGS finishes (or just reports) the one in runs/default.
SWEEP_OUT := runs/default
sweep: install
	$(VENV)/bin/jaxopt-lab sweep --out $(SWEEP_OUT) $(or $(ARGS),$(if $(wildcard $(SWEEP_OUT)/sweep.toml),--resume))

bench: install
	$(PY) experiments/bench_sweep.py $(ARGS)
	$(PY) experiments/bench_families.py $(filter --update-results,$(ARGS))
	$(PY) experiments/bench_measure.py $(filter --update-results,$(ARGS))

experiments: install
	$(PY) experiments/run_all.py $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
