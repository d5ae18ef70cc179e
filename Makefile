# One command to serve, one to test. The test environment needs python3.13 (for mongoeco);
# on these machines it lives under pyenv, off PATH. PYTHON= overrides.
PYTHON ?= $(shell (python3.13 -c '' >/dev/null 2>&1 && echo python3.13) || \
	(PYENV_VERSION=3.13.0 python3.13 -c '' >/dev/null 2>&1 && echo "env PYENV_VERSION=3.13.0 python3.13") || \
	echo python3)
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8080
DATA_DIR ?= ./iceprod-data
PYTEST_ARGS ?=

.PHONY: venv serve test lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

serve: venv
	$(VENV)/bin/iceprod-server --host $(HOST) --port $(PORT) --data-dir $(DATA_DIR)

test: venv
	$(PY) -m pytest $(PYTEST_ARGS)

lint: venv
	$(PY) -m pip install -q ruff mypy
	$(VENV)/bin/ruff check iceprod tests bench
	$(VENV)/bin/mypy iceprod

bench: venv
	$(PY) bench/scheduler.py
	$(PY) bench/e2e.py

clean:
	rm -rf $(VENV) build *.egg-info
