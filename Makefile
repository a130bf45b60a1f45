PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: serve test lint format bench clean

$(BIN)/daifuku: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

serve: $(BIN)/daifuku
	$(BIN)/daifuku serve --host $(HOST) --port $(PORT)

lint: $(BIN)/daifuku
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy domain adapters api

format: $(BIN)/daifuku
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The suite on as many processes as there are cores, up to 4 (TEST_PROCESSES=0: in this one).
TEST_PROCESSES ?= auto

test: lint
	$(BIN)/pytest -q -n $(TEST_PROCESSES) --maxprocesses 4 $(PYTEST_ARGS)

bench: $(BIN)/daifuku
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache .hypothesis
