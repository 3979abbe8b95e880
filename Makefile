# `make run` and `make test` are the two set-up commands; each builds .venv on first use.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint format serve-asgi schema bench scale-up scale-down clean

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "$(PYTHON) not found; set PYTHON=/path/to/python3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python requirements.txt requirements-dev.txt
	$(BIN)/pip install --quiet -r requirements-dev.txt
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py runserver $(HOST):$(PORT)

# The same app under ASGI (uvicorn): what streaming replies are served with in production.
serve-asgi: $(STAMP)
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/uvicorn chatengine.asgi:application --host $(HOST) --port $(PORT) --no-access-log \
		--http chatengine.uvicorn_http:NoDelayH11Protocol

test: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Benchmarks (never part of `make test`): need PostgreSQL and Redis, and wrk as load generator;
# bench/run.py installs the bench's own extras (bench/requirements.txt) into .venv when missing.
BENCH_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/chatengine_bench
BENCH_REDIS_URL ?= redis://127.0.0.1:6379/15
bench: $(STAMP)
	@command -v wrk >/dev/null 2>&1 || { echo "installing wrk (load generator)"; apt-get install -y -qq wrk >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq wrk); }
	DATABASE_URL=$${DATABASE_URL:-$(BENCH_DATABASE_URL)} REDIS_URL=$${REDIS_URL:-$(BENCH_REDIS_URL)} \
		$(BIN)/python bench/run.py $(BENCH_ARGS)

# The scale environment on loopback (docs/scaling.md): a PostgreSQL primary and its streaming
# replica, PgBouncer, a 3-master Redis Cluster with replicas and two app nodes. Needs Debian's
# pgbouncer, redis-server and postgresql; `make test` starts its own for the scale tests.
scale-up: $(STAMP)
	$(BIN)/python -m tests.scale.env up

scale-down: $(STAMP)
	$(BIN)/python -m tests.scale.env down

# Regenerate the committed OpenAPI schema (a test fails while docs/openapi.yaml is stale).
schema: $(STAMP)
	$(BIN)/python manage.py spectacular --validate --fail-on-warn --file docs/openapi.yaml

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
