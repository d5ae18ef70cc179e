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

PYVERSION := import sys; print(sys.version.split()[0])

.PHONY: venv runtime serve test docs lint bench clean vendor screenshots

# A venv made by another Python (say 3.11 for serving, where the tests need 3.13) is
# rebuilt rather than half-used. Stamps record what is installed: the runtime alone
# (`make serve`) or with the test extras; either is redone when pyproject.toml changes.
# PYTHONWARNINGS=ignore keeps the build backend's notes for packagers (editable installs)
# out of the way of someone who only wants the server running.
define ensure_venv
	@want=$$($(PYTHON) -c '$(PYVERSION)'); have=$$($(PY) -c '$(PYVERSION)' 2>/dev/null || true); \
	if [ "$$want" != "$$have" ]; then \
		if [ -n "$$have" ]; then echo "$(VENV) was made by Python $$have: rebuilding it with $$want"; fi; \
		rm -rf $(VENV) && $(PYTHON) -m venv $(VENV) && $(PY) -m pip install -q --upgrade pip; \
	fi
endef

runtime:
	$(ensure_venv)
	@if [ ! $(VENV)/.runtime -nt pyproject.toml ]; then \
		echo "installing iceprod into $(VENV)"; \
		PYTHONWARNINGS=ignore $(PY) -m pip install -q -e . && touch $(VENV)/.runtime; fi

venv:
	$(ensure_venv)
	@if [ ! $(VENV)/.installed -nt pyproject.toml ]; then \
		echo "installing iceprod with its test and docs tools into $(VENV)"; \
		PYTHONWARNINGS=ignore $(PY) -m pip install -q -e '.[test,docs]' && touch $(VENV)/.installed $(VENV)/.runtime; fi

serve: runtime
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

# the benchmarks of issue 13 (and ui.py, the dashboard's pages); each prints its figures and ends with one `summary` line.
# BENCH_ARGS=--quick runs the smoke sizes (scheduler.py has no --quick).
BENCH_ARGS ?=
bench: venv
	$(PY) bench/scheduler.py
	$(PY) bench/e2e.py $(BENCH_ARGS)
	$(PY) bench/latency.py $(BENCH_ARGS)
	$(PY) bench/claims.py $(BENCH_ARGS)
	$(PY) bench/pilots.py $(BENCH_ARGS)
	$(PY) bench/scale.py $(BENCH_ARGS)
	$(PY) bench/archive.py $(BENCH_ARGS)
	$(PY) bench/ui.py $(BENCH_ARGS)
	$(PY) bench/responses.py $(BENCH_ARGS)

# The dashboard's third-party browser files, from the npm registry as pinned by
# ui/package-lock.json. Their copies in iceprod/ui/static/vendor are committed (package data),
# so serving and testing a fresh clone need neither node nor the network; run this to update
# them (then update iceprod/ui/static/vendor/VERSIONS.md and docs/dashboard.md).
VENDOR := iceprod/ui/static/vendor
vendor:
	cd ui && npm ci --no-audit --no-fund
	mkdir -p $(VENDOR)
	cp ui/node_modules/uplot/dist/uPlot.esm.js ui/node_modules/uplot/dist/uPlot.min.css $(VENDOR)/
	cp ui/node_modules/uplot/LICENSE $(VENDOR)/uPlot.LICENSE

# the dashboard's pictures in docs/dashboard.md, taken by its browser tests (tests/ui)
screenshots: venv
	ICEPROD_SCREENSHOTS=docs/images $(PY) -m pytest tests/ui -q

clean:
	rm -rf $(VENV) build site *.egg-info
