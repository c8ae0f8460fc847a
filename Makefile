# unetzoo: every target creates .venv and installs what it needs, from scratch if necessary.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install test test-slow demo bench readme-table clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow $(PYTEST_ARGS)

demo: $(STAMP)
	$(PY) -m unetzoo demo

bench: $(STAMP)
	$(PY) benchmarks/bench_backbones.py

readme-table: $(STAMP)
	$(PY) benchmarks/model_table.py --update-readme

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
