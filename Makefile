# clinical-mlops — the two commands are `make demo` and `make test`.
# Everything the project needs is installed from here: nothing is assumed on the machine.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
UV     := $(VENV)/bin/uv
EXTRAS ?= dev,postgres,console,vault,mlflow,spark,serve,fhir
STAMP  := $(VENV)/.installed-$(shell echo "$(EXTRAS)" | tr ',' '-')

.PHONY: demo test bench lint install clean help sysdeps

help:
	@echo "make demo   - create the environment, install, run the end-to-end pipeline"
	@echo "make test   - install everything the tests need and run the full suite"
	@echo "make bench  - run the long measurements and write docs/BENCHMARKS.md"
	@echo "make lint   - ruff and mypy"

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip uv

$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(UV) pip install --quiet --python $(PY) -e ".[$(EXTRAS)]"
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/clinical-mlops demo

# System packages the tests start for real: PostgreSQL (tests/postgres_cluster.py),
# Prometheus (the scrape test) and Chromium (console tests, driven by Playwright with
# /usr/bin/chromium; no browser is ever downloaded).
SYSPKGS := postgresql prometheus chromium
sysdeps:
	@missing=""; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v prometheus >/dev/null 2>&1 || missing="$$missing prometheus"; \
	test -x /usr/bin/chromium || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; \
	fi

test: sysdeps $(STAMP)
	$(PY) -m pytest -n 2 -q

bench: $(STAMP)
	$(PY) bench/run.py

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy src/clinical_mlops

clean:
	rm -rf $(VENV) .clinical-mlops .pytest_cache .mypy_cache .ruff_cache
