# Two set-up commands: `make demo` and `make test`. Each creates .venv when it is missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1

DEMO_METHODS := msp,maxlogit,entropy,energy,sml

.PHONY: demo quick test lint clean

$(BIN)/owsbench: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -e '.[dev]'
	touch $@

demo: $(BIN)/owsbench
	$(BIN)/owsbench run --methods $(DEMO_METHODS) --datasets synthstreets --preset default --out runs/demo

quick: $(BIN)/owsbench
	$(BIN)/owsbench run --methods $(DEMO_METHODS) --datasets synthstreets --preset quick --out runs/quick

test: $(BIN)/owsbench
	$(BIN)/python -m pytest -q

lint: $(BIN)/owsbench
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -rf runs .pytest_cache
