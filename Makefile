# bridge: `make install`, then `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ARGS ?=

.PHONY: install test lint serve redis soak clean

install: $(BIN)/bridge

$(BIN)/bridge: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	@touch $@
	@echo "installed: $(BIN)/bridge"

test: install
	$(BIN)/pytest $(ARGS)

lint: install
	$(BIN)/ruff check bridge tests
	$(BIN)/mypy bridge

# `make serve NAME=alice` runs one agent's MCP server on stdio (for manual poking).
serve: install
	$(BIN)/bridge serve $(if $(NAME),--name $(NAME)) $(ARGS)

# The shared per-user embedded Redis, in the foreground.
redis: install
	$(BIN)/bridge redis

# A bounded soak (default 60 s, 10 agents): agents and redis-server are SIGKILLed and
# restarted while messages flow; every message is accounted for. `make soak ARGS="--seconds 30"`
soak: install
	$(BIN)/python -m bench.soak $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
