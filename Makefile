# carescore — the two commands are `make run` and `make test` (see README.md).
SHELL := /bin/bash
# Debian's own python3.11 (an optimised build) when there is one: the HL7 path runs about a
# quarter faster on it than on a plain source build such as pyenv's (BENCHMARKS.md).
PYTHON ?= $(shell command -v /usr/bin/python3.11 || command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
# Every package at the version and hashes of the lock (make lock), for Python 3.11 on x86-64 Linux:
# dev.txt for the checkout (runtime, test and dev extras); runtime.txt and build.txt (setuptools, and
# mypy to compile the engine into the wheel: setup.py) for the image (deploy/Dockerfile).
LOCK := requirements/dev.txt
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml $(LOCK) | sha1sum | cut -c1-12)

.PHONY: help install native lock audit system-deps kafka-fetch kafka-up kafka-down keycloak-fetch keycloak-up keycloak-down run test bench fuzz lint format typecheck docs dashboards clean

help:
	@echo "make run     start carescore with the demo hospital (CARESCORE_DEMO=0 for real feeds only)"
	@echo "make test    install what the tests need and run them"
	@echo "make bench   run the benchmarks in bench/ and write BENCHMARKS.md"
	@echo "make lock    regenerate requirements/*.txt (pinned, with hashes) from pyproject.toml;  make audit  pip-audit them"
	@echo "make kafka-up / kafka-down   a local Kafka broker (KRaft) on 127.0.0.1:9092 (Maven + Java 17)"
	@echo "make keycloak-up / keycloak-down   a local Keycloak (test realm carescore) on 127.0.0.1:8180 (Maven + Java 21+)"
	@echo "make fuzz    fuzz the HL7 parser, receiver and MLLP framing for a few minutes (var/fuzz/report.md)"
	@echo "make lint    ruff check + format check + import contracts;  make typecheck  mypy;  make docs  docs/feeds.md, docs/kpis.md"
	@echo "make dashboards   regenerate the Grafana dashboards (deploy/grafana) and the KPI target/benchmark rules"

# Debian packages the tests run for real: Alertmanager (its channel), PostgreSQL (the shared
# alert store), Prometheus (promtool checks the deploy config), Chromium (Playwright drives the
# scorecard page with executable_path=/usr/bin/chromium; no `playwright install`). Their
# packaged services are stopped: tests start their own on 127.0.0.1.
SYSTEM_PACKAGES := prometheus-alertmanager postgresql prometheus chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

$(PY):
	$(PYTHON) -m venv $(VENV)

# Nothing unhashed: the lock's packages (pip and setuptools included), then carescore itself built
# with that setuptools (no build isolation, which would fetch one unchecked). pip check fails when
# pyproject.toml asks for something the lock does not have: run make lock.
$(STAMP): pyproject.toml $(LOCK) | $(PY)
	$(PY) -m pip install -q --require-hashes -r $(LOCK)
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	$(PY) -m pip check || { echo "the lock is out of step with pyproject.toml: make lock"; exit 1; }
	rm -f $(VENV)/.installed-* && touch $(STAMP)

# The engine's hot modules compiled to C by mypyc (engine/native.py), into .native/; a no-op while
# that build matches the engine's sources. run, test and bench build it (not lint or docs: a
# rebuild takes about 1.5 minutes). Where it cannot be built the engine runs as pure Python,
# except under CI=true: the suite must run what users run. Needs a C compiler and Python's
# headers: on Debian, gcc and python3-dev are installed when missing.
BUILD_PACKAGES := gcc python3-dev
native: $(STAMP)
	@if ! command -v cc >/dev/null || [ ! -f "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["include"])')/Python.h" ]; then \
		if command -v apt-get >/dev/null; then \
			echo "installing Debian packages to compile the engine: $(BUILD_PACKAGES)"; \
			$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(BUILD_PACKAGES) || true; \
		fi; \
	fi
	$(PY) -m engine.native_build $(if $(filter true,$(CI)),--require)

install: $(STAMP)

LOCK_FLAGS ?=
UV_COMPILE := $(LOCK_FLAGS) --generate-hashes --python-version 3.11 --python-platform x86_64-unknown-linux-gnu --no-header --quiet

# Regenerate the locks from pyproject.toml: pins already in them are kept (a new requirement adds
# only what it needs); `make lock LOCK_FLAGS=--upgrade` moves everything to the newest versions
# pyproject.toml allows. runtime.txt and build.txt are held to dev.txt's versions, so the image
# runs what the tests ran.
lock: install
	$(VENV)/bin/uv pip compile pyproject.toml --extra test --extra dev --extra postgres $(UV_COMPILE) -o requirements/dev.txt
	$(VENV)/bin/uv pip compile pyproject.toml --extra postgres -c requirements/dev.txt $(UV_COMPILE) -o requirements/runtime.txt
	printf 'setuptools>=77\nmypy\n' | $(VENV)/bin/uv pip compile - -c requirements/dev.txt $(UV_COMPILE) -o requirements/build.txt

# Known vulnerabilities of every locked version, from OSV (pip-audit's default source; --strict: a
# package it cannot look up fails too). PyPI's per-release JSON, pip-audit's other source, is not
# served through this build machine's registry access, and OSV is not reachable from it: here the
# audit says so and is skipped; anywhere OSV answers it runs, and a vulnerability fails make test.
audit: install
	@if $(PY) -c "import socket; socket.create_connection(('api.osv.dev', 443), 10)" 2>/dev/null; then \
		$(VENV)/bin/pip-audit --strict --require-hashes --disable-pip --progress-spinner off \
			-r requirements/runtime.txt -r requirements/dev.txt; \
	else \
		echo "make audit: SKIPPED, the vulnerability service api.osv.dev cannot be reached from this machine"; \
	fi

system-deps:
	@missing=""; for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
		for s in prometheus-alertmanager postgresql prometheus; do $(SUDO) systemctl disable --now $$s >/dev/null 2>&1 || true; done; \
	fi

run: install native
	$(VENV)/bin/carescore run $(if $(CONFIG),--config $(CONFIG))

test: install native audit system-deps kafka-fetch keycloak-fetch
	$(VENV)/bin/lint-imports
	@# Two workers: most tests wait on servers they started (brokers, carescore processes, a browser).
	@# The tests that time the server against itself (marked serial) then run alone: a neighbour's
	@# load would be in their figures. Both parts run; either failing fails make test.
	status=0; \
	$(PY) -m pytest -n 2 --dist loadscope -m "not serial" || status=$$?; \
	$(PY) -m pytest -m serial || status=$$?; \
	exit $$status

bench: install native kafka-fetch
	$(PY) bench/engine_throughput.py
	$(PY) bench/engine_memory.py
	$(PY) bench/kafka_archive.py
	$(PY) bench/hl7_parse.py
	$(PY) bench/mllp_e2e.py
	$(PY) bench/mimic_mllp.py
	$(PY) bench/mimic_backfill.py
	$(PY) bench/kafka_worker.py
	$(PY) bench/forecast_backtest.py

fuzz: install
	$(PY) tests/fuzz/run.py

KAFKA_DIR ?= var/kafka

kafka-fetch:
	deploy/kafka/kafka.sh fetch

kafka-up:
	deploy/kafka/kafka.sh start $(KAFKA_DIR) 9092 9093

kafka-down:
	deploy/kafka/kafka.sh stop $(KAFKA_DIR)

KEYCLOAK_DIR ?= var/keycloak

keycloak-fetch:
	deploy/keycloak/keycloak.sh fetch

keycloak-up:
	deploy/keycloak/keycloak.sh start $(KEYCLOAK_DIR) 8180

keycloak-down:
	deploy/keycloak/keycloak.sh stop $(KEYCLOAK_DIR)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

typecheck: install
	$(VENV)/bin/mypy carescore engine connectors alerts api demo

docs: install
	$(PY) -m connectors.feeds.docs > docs/feeds.md
	$(PY) -m engine.kpi_docs > docs/kpis.md

dashboards: install
	$(PY) deploy/grafana/build.py

clean:
	rm -rf $(VENV) .native build dist var .pytest_cache .mypy_cache .ruff_cache
