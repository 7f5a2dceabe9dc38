# Two commands do all the set-up: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum < pyproject.toml | cut -d' ' -f1)
EXTERNAL_REDIS ?= redis://127.0.0.1:6379/15

.PHONY: run reset test lint types pytest test-embedded test-external test-cluster bench clean venv \
	fuzz faults soak mutation

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

## Serve the API on the embedded Redis; seeds the demo on first start.
run: $(STAMP)
	$(BIN)/healthcomp serve --demo

## Start over: delete the embedded Redis's data (every competition and user of
## `make run`, the demo included; the next `make run` seeds the demo again). The
## development secret stays, so tokens keep working. Refused while a server runs.
DATA ?= data
reset:
	@if [ -f $(DATA)/redis/lock ] && ! flock -n $(DATA)/redis/lock true; then \
		echo "a server is running on $(DATA): stop it first (Ctrl+C where it runs)"; exit 1; fi
	rm -rf $(DATA)/redis
	@echo "reset: $(DATA)/redis deleted; \`make run\` seeds the demo again"

## The whole suite: lint, types, then the tests on each Redis.
test: lint types test-embedded test-external test-cluster

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

types: $(STAMP)
	$(BIN)/mypy

test-embedded: $(STAMP)
	HC_TEST_BACKEND=embedded $(BIN)/pytest

## Against the machine's Redis (db 15, own key prefix); skipped when none answers.
test-external: $(STAMP)
	@if $(BIN)/python -c "import redis,sys; redis.Redis.from_url('$(EXTERNAL_REDIS)', socket_timeout=1).ping()" 2>/dev/null; then \
		HC_TEST_BACKEND=external TEST_REDIS_URL=$(EXTERNAL_REDIS) $(BIN)/pytest; \
	elif [ -n "$$CI" ]; then echo "CI: no Redis at $(EXTERNAL_REDIS)"; exit 1; \
	else echo "skipping the external-Redis run: nothing answers at $(EXTERNAL_REDIS)"; fi

test-cluster: $(STAMP)
	HC_TEST_BACKEND=cluster $(BIN)/pytest

## The SPEC §8 benchmark: the service in production configuration beside a bare ASGI
## hello, a 1,000,000-participant board, RSS; prints one report and writes it into
## docs/BENCHMARKS.md. Needs wrk (installed when run as root). Options: BENCH_ARGS="--help".
bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

## Issue 12's longer runs (docs/RELIABILITY.md). Each has a bounded part in `make test`.
## The schema fuzz, long: every operation and the links between them, 400 random cases
## per operation and 2,000 stateful scenarios, a new seed each run (7-12 min on two
## cores; tests/fuzz.py). FUZZ_ARGS="--help".
fuzz: $(STAMP)
	$(BIN)/python -m tests.fuzz --long $(FUZZ_ARGS)

## Faults under load with longer load phases (FAULT_SECONDS, default 10).
faults: $(STAMP)
	HC_FAULT_SECONDS=$(or $(FAULT_SECONDS),10) $(BIN)/pytest tests/faults -s -p no:cacheprovider

## The soak: 10 minutes of mixed load, RSS and descriptors sampled (SOAK_ARGS="--minutes 1").
soak: $(STAMP)
	nice -n 10 $(BIN)/python -m bench.soak $(SOAK_ARGS)

## Mutation testing: mutmut over the Python rules and the planted Lua changes (long;
## MUTATION_ARGS="--lua" for the Lua part only, "--help" for the rest).
mutation: $(STAMP)
	$(BIN)/python -m tests.mutation $(MUTATION_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
