# bridge: `make install`, then `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ARGS ?=

.PHONY: install test lint serve redis team soak bench clean

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

# A team on one machine: tmux with one Claude Code per agent and `bridge tail` (README).
# `make team AGENTS="carol:manager alice:developer bob:developer" ARGS="--room demo"`
AGENTS ?= carol:manager alice:developer bob:developer
team: install
	$(BIN)/bridge team $(AGENTS) $(ARGS)

# A bounded soak (default 60 s, 10 agents): agents and redis-server are SIGKILLed and
# restarted while messages flow; every message is accounted for. `make soak ARGS="--seconds 30"`
soak: install
	$(BIN)/python -m bench.soak $(ARGS)

# Benchmarks (issue 5): latency, throughput, fan-out, presence scale, start-up, catch-up, with
# the raw redis-py floor in the same run. Full run < 5 min; `make bench ARGS=--quick` ~30 s;
# `ARGS=--profile` adds py-spy of the throughput run. Writes bench/results/latest.json,
# docs/benchmarks.md and docs/benchmarks-*.png.
bench: install
	BENCH_COMMAND="make bench$(if $(ARGS), ARGS='$(ARGS)')" $(BIN)/python -m bench $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
