# carescore — the two commands are `make run` and `make test` (see README.md).
SHELL := /bin/bash
# Debian's own python3.11 (an optimised build) when there is one: the HL7 path runs about a
# quarter faster on it than on a plain source build such as pyenv's (BENCHMARKS.md).
PYTHON ?= $(shell command -v /usr/bin/python3.11 || command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)

.PHONY: help install system-deps kafka-fetch kafka-up kafka-down keycloak-fetch keycloak-up keycloak-down run test bench fuzz lint format typecheck docs dashboards clean

help:
	@echo "make run     start carescore with the demo hospital (CARESCORE_DEMO=0 for real feeds only)"
	@echo "make test    install what the tests need and run them"
	@echo "make bench   run the benchmarks in bench/ and write BENCHMARKS.md"
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

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q --upgrade pip "setuptools>=77"
	$(PY) -m pip install -q -e ".[test,dev]"
	rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

system-deps:
	@missing=""; for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
		for s in prometheus-alertmanager postgresql prometheus; do $(SUDO) systemctl disable --now $$s >/dev/null 2>&1 || true; done; \
	fi

run: install
	$(VENV)/bin/carescore run $(if $(CONFIG),--config $(CONFIG))

test: install system-deps kafka-fetch keycloak-fetch
	$(VENV)/bin/lint-imports
	$(PY) -m pytest

bench: install kafka-fetch
	$(PY) bench/engine_throughput.py
	$(PY) bench/engine_memory.py
	$(PY) bench/hl7_parse.py
	$(PY) bench/mllp_e2e.py
	$(PY) bench/mimic_mllp.py
	$(PY) bench/mimic_backfill.py
	$(PY) bench/kafka_worker.py

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
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
