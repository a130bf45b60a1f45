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

test: lint
	$(BIN)/pytest -q $(PYTEST_ARGS)

bench: $(BIN)/daifuku
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache .hypothesis
