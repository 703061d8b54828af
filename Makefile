# clinical-mlops — the two commands are `make demo` and `make test`.
# Everything the project needs is installed from here: nothing is assumed on the machine.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
UV     := $(VENV)/bin/uv
EXTRAS ?= dev,postgres,console,vault,mlflow,spark,serve,fhir
STAMP  := $(VENV)/.installed-$(shell echo "$(EXTRAS)" | tr ',' '-')

.PHONY: demo test bench lint install clean help sysdeps fhir-server oidc-provider seismometer-env

help:
	@echo "make demo   - create the environment, install, run the end-to-end pipeline"
	@echo "make test   - install everything the tests need and run the full suite"
	@echo "make bench  - run the long measurements and write docs/BENCHMARKS.md"
	@echo "make lint   - ruff, mypy, the package layers contract and the front-end check"
	@echo "make audit  - pip-audit of the installed environment (PyPI vulnerability data)"
	@echo "make sbom   - CycloneDX SBOM of the environment into dist/sbom.cdx.json"
	@echo "make lock   - pinned, hashed requirements/lock.txt (release) and lock-dev.txt"

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
# Prometheus (the scrape test), Chromium (console tests, driven by Playwright with
# /usr/bin/chromium; no browser is ever downloaded) and Node.js with npm (the FHIR server
# CDS Hooks fetches from, tests/fhir_server.py), and OpenSSH's ssh-keygen (signed governed
# acts are checked against `ssh-keygen -Y sign`/`verify`, tests/governance/test_signed_acts.py).
SYSPKGS := postgresql prometheus chromium nodejs npm openssh-client
sysdeps:
	@missing=""; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v prometheus >/dev/null 2>&1 || missing="$$missing prometheus"; \
	test -x /usr/bin/chromium || missing="$$missing chromium"; \
	command -v node >/dev/null 2>&1 || missing="$$missing nodejs"; \
	command -v npm >/dev/null 2>&1 || missing="$$missing npm"; \
	command -v ssh-keygen >/dev/null 2>&1 || missing="$$missing openssh-client"; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; \
	fi

# The loopback FHIR server's packages, exactly as tests/fhir_server/package-lock.json pins them.
FHIR_SERVER := tests/fhir_server/node_modules/.package-lock.json
$(FHIR_SERVER): tests/fhir_server/package.json tests/fhir_server/package-lock.json
	cd tests/fhir_server && npm ci --no-audit --no-fund
fhir-server: $(FHIR_SERVER)

# The loopback OpenID Connect provider (panva's oidc-provider), pinned the same way.
OIDC_PROVIDER := tests/oidc_provider/node_modules/.package-lock.json
$(OIDC_PROVIDER): tests/oidc_provider/package.json tests/oidc_provider/package-lock.json
	cd tests/oidc_provider && npm ci --no-audit --no-fund
oidc-provider: $(OIDC_PROVIDER)

# seismometer (Epic's open-source model-validation notebooks) in an environment of its own: its
# pins (pyarrow<20, jupyterlab, ydata-profiling) are not the project's. The export test
# (tests/monitoring/test_seismometer_export.py) loads `export seismometer` files with its loader.
SEISMOMETER_VERSION := 0.5.0
SEISMOMETER_VENV    := .venv-seismometer
SEISMOMETER         := $(SEISMOMETER_VENV)/.installed-$(SEISMOMETER_VERSION)
$(SEISMOMETER):
	$(PYTHON) -m venv $(SEISMOMETER_VENV)
	$(SEISMOMETER_VENV)/bin/pip install --quiet "seismometer==$(SEISMOMETER_VERSION)"
	touch $@
seismometer-env: $(SEISMOMETER)

test: sysdeps $(STAMP) $(FHIR_SERVER) $(OIDC_PROVIDER) $(SEISMOMETER)
	$(PY) -m pytest -n 2 -q

bench: $(STAMP)
	$(PY) bench/run.py

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy src/clinical_mlops
	PYTHONPATH=src $(VENV)/bin/lint-imports
	$(PY) -m pytest -q -p no:cacheprovider tests/architecture

clean:
	rm -rf $(VENV) $(SEISMOMETER_VENV) .clinical-mlops .pytest_cache .mypy_cache .ruff_cache

# -- supply chain (docs/RELIABILITY.md, "Supply chain") ----------------------------------------
.PHONY: audit sbom lock

# PyPI's vulnerability data for every installed distribution. --strict fails when a package
# cannot be audited, so an unreachable service never reads as "no known vulnerabilities".
# Exceptions: one reviewed line each in requirements/audit-ignore.txt (id, dates, reason).
AUDIT_IGNORE := requirements/audit-ignore.txt
audit: $(STAMP)
	$(VENV)/bin/pip-audit -s pypi --strict --skip-editable --progress-spinner off \
		$$(awk '!/^#/ && NF {print "--ignore-vuln", $$1}' $(AUDIT_IGNORE))

# The SBOM of the environment the tests ran in (dist/ is the build output, never committed).
sbom: $(STAMP)
	mkdir -p dist
	$(VENV)/bin/cyclonedx-py environment --pyproject pyproject.toml --mc-type application \
		--output-reproducible --of JSON -o dist/sbom.cdx.json $(VENV)
	@echo "wrote dist/sbom.cdx.json"

# Pinned versions with hashes: lock.txt for releases (the service's extras), lock-dev.txt for
# the full environment the Makefile installs. Re-running keeps pins; UPGRADE=1 moves them.
comma := ,
RELEASE_EXTRAS ?= serve,console,fhir,postgres,vault
LOCK_FLAGS = --python-version 3.11 --generate-hashes --custom-compile-command "make lock" \
	--quiet $(if $(UPGRADE),--upgrade)
lock: | $(VENV)/bin/python
	mkdir -p requirements
	$(UV) pip compile pyproject.toml $(foreach e,$(subst $(comma), ,$(RELEASE_EXTRAS)),--extra $(e)) \
		$(LOCK_FLAGS) -o requirements/lock.txt
	$(UV) pip compile pyproject.toml $(foreach e,$(subst $(comma), ,$(EXTRAS)),--extra $(e)) \
		$(LOCK_FLAGS) -o requirements/lock-dev.txt
