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

.PHONY: venv serve test docs lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,docs]'
	touch $@

venv: $(VENV)/.installed

serve: venv
	$(VENV)/bin/iceprod-server --host $(HOST) --port $(PORT) --data-dir $(DATA_DIR)

# the suite builds the docs too (tests/test_docs.py: mkdocs build --strict)
test: venv
	$(PY) -m pytest $(PYTEST_ARGS)

docs: venv
	$(PY) -m mkdocs build --strict --site-dir site

lint: venv
	$(PY) -m pip install -q ruff mypy
	$(VENV)/bin/ruff check iceprod tests bench docs/hooks
	$(VENV)/bin/mypy iceprod

bench: venv
	$(PY) bench/scheduler.py
	$(PY) bench/e2e.py

clean:
	rm -rf $(VENV) build site *.egg-info
