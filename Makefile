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

sweep: install
	$(VENV)/bin/jaxopt-lab sweep --out runs/default

bench: install
	$(PY) experiments/bench_sweep.py

experiments: install
	$(PY) experiments/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
