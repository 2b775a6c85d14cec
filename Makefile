# Trellis: `make serve` (install, migrate, load examples, serve) and `make test`.
VENV      := .venv
PYTHON    ?= python3
BIN       := $(VENV)/bin
PG_URL    ?= postgres://postgres@127.0.0.1:5432/test
REDIS     ?= redis://127.0.0.1:6379/0

.PHONY: install install-test serve test test-sqlite test-postgres lint format bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

serve: install
	$(BIN)/trellis migrate --noinput -v 0
	$(BIN)/trellis workflow sync
	$(BIN)/trellis createadmin
	$(BIN)/trellis serve

# The whole suite on the embedded default (SQLite), then on PostgreSQL + Redis.
# With CI=true an unreachable PostgreSQL or Redis fails the run instead of skipping it.
# The schema check runs first so the run ends on pytest's own summary.
test: install-test lint test-schema test-sqlite test-postgres

lint: install-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install-test
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test-sqlite: install-test
	env -u DATABASE_URL -u REDIS_URL $(BIN)/pytest

test-postgres: install-test
	@if $(BIN)/python -m tests.services_up "$(PG_URL)" "$(REDIS)"; then \
		DATABASE_URL="$(PG_URL)" REDIS_URL="$(REDIS)" $(BIN)/pytest; \
	elif [ "$$CI" = "true" ]; then \
		echo "PostgreSQL or Redis unreachable and CI=true: failing"; exit 1; \
	else \
		echo "PostgreSQL or Redis unreachable: skipped the PostgreSQL + Redis pass"; \
	fi

# The API against its OpenAPI document with schemathesis, on a live `trellis serve`.
.PHONY: test-schema
test-schema: install-test
	bash tests/schema_check.sh

bench: install
	$(BIN)/trellis bench
