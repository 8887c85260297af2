# bridge: `make install`, then `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ARGS ?=

.PHONY: install install-docs lock test check lint docs docs-serve demo serve redis team soak bench \
	web-screenshot clean

# Installs pin every package to constraints.txt, so a fresh clone gets the versions CI used
# (an unpinned mypy once failed `make lint` on a new machine). `make lock` renews the pins.
CONSTRAINTS := constraints.txt
PIP := $(BIN)/pip install --quiet -c $(CONSTRAINTS)

install: $(BIN)/bridge

$(BIN)/bridge: pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(PIP) -e ".[dev,web]"
	@touch $@
	@echo "installed: $(BIN)/bridge"

install-docs: $(BIN)/mkdocs

$(BIN)/mkdocs: $(BIN)/bridge
	$(PIP) -e ".[dev,web,docs]"
	@touch $@

# Renew constraints.txt: the newest versions that pyproject.toml allows, installed into a
# throwaway venv and frozen. Then `make clean install lint test docs` and commit the file.
LOCK_VENV ?= .cache/lock-venv
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install --quiet --upgrade pip
	$(LOCK_VENV)/bin/pip install --quiet ".[dev,web,docs]"
	{ echo "# Exact versions for make install (pip -c). Made by make lock from pyproject.toml;"; \
	  echo "# renew with make lock, then make lint test docs before committing."; \
	  $(LOCK_VENV)/bin/pip freeze --exclude-editable | grep -v '^bridge-agents'; } > $(CONSTRAINTS)
	rm -rf $(LOCK_VENV)
	@echo "wrote $(CONSTRAINTS)"

# The docs site (mkdocs.yml, docs/): --strict, so a broken link or a missing page fails.
# NO_MKDOCS_2_WARNING: Material 9.7+ prints a banner about its successor on every build
docs: install-docs
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir .cache/site
	@echo "built: .cache/site/index.html (make docs-serve: browse it at http://127.0.0.1:8000)"

docs-serve: install-docs
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

# bridge's main job, played by scripted agents (no model, no API key) on the embedded Redis
demo: install
	$(BIN)/bridge demo $(ARGS)

# The whole suite on WORKERS pytest-xdist workers (tests/support/ports.py keeps their ports
# apart; pytest gives each its own temp dir). Four on two cores, as most tests spend their
# time waiting on the processes they started: 15 min 25 s in one process -> 5 min 7 s here.
# WORKERS=0: one process.
WORKERS ?= 4
XDIST = $(if $(filter 0,$(WORKERS)),,-n $(WORKERS) --dist worksteal)
test: install
	$(BIN)/pytest $(XDIST) $(ARGS)

# The inner loop: lint, then the quick modules (tests/conftest.py), under about a minute
check: lint
	$(BIN)/pytest $(XDIST) -q -m quick $(ARGS)

# install-docs: mypy checks the docs hooks against mkdocs itself
lint: install-docs
	$(BIN)/ruff check bridge tests docs/hooks
	$(BIN)/mypy bridge docs/hooks

# `make serve NAME=alice` runs one agent's MCP server on stdio (for manual poking).
serve: install
	$(BIN)/bridge serve $(if $(NAME),--name $(NAME)) $(ARGS)

# The shared per-user embedded Redis, in the foreground.
redis: install
	$(BIN)/bridge redis

# A team on one machine: tmux with one Claude Code per agent and `bridge tail` (docs/team.md); an
# agent NAME:ROLE:codex runs Codex instead.
# `make team AGENTS="carol:manager alice:developer dave:developer:codex" ARGS="--room demo"`
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
# docs/benchmarks.md and docs/benchmarks-*.png. `ARGS="--only catchup --replace-in-docs"`
# measures the catch-up alone and replaces only its line of docs/benchmarks.md (marked so).
# Exits 1 when a scenario failed or lost, duplicated or reordered a message.
bench: install
	BENCH_COMMAND="make bench$(if $(ARGS), ARGS='$(ARGS)')" $(BIN)/python -m bench $(ARGS)

# docs/web.png, docs/web.md's picture of `bridge web`: the busy-room test of tests/test_web.py
# (a real room, real agents, Debian's chromium) takes it, so it matches the code
web-screenshot: install
	BRIDGE_WEB_SCREENSHOT=docs/web.png $(BIN)/pytest -q -p no:cacheprovider tests/test_web.py -k screenshot

# --- Docker, across machines (docs/docker.md) ---
# Settings from make's command line or the environment: REDIS_URL, ROOM, AGENTS="NAME:ROLE ..."
# (NAME:ROLE:codex: a Codex agent, in the image with Codex), for up-redis REDIS_PASSWORD or
# REDIS_ACL_FILE; optional files (host paths) CLAUDE_CREDENTIALS, BRIDGE_SECRET_FILE,
# BRIDGE_TLS_CA/CERT/KEY, PROMPT_DIR; CHANNEL_FLAG=1 for Claude Code before 2.1.224 (the
# development channel, as it has no session inbox); CODEX_ARGS, OPENAI_API_KEY for Codex.
# deploy/compose_agents.py checks them before anything starts. DRY_RUN=1 prints the compose
# commands instead of running them.
.PHONY: up up-redis down logs who tail attach
COMPOSE ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)
PROJECT ?= bridge
ROOM ?= main
HOST_NAME ?= $(shell hostname -s 2>/dev/null)
GENERATED ?= deploy/.generated
DEPLOY = ROOM='$(ROOM)' HOST_NAME='$(HOST_NAME)' $(PYTHON) deploy/compose_agents.py
DC = $(COMPOSE) -p $(PROJECT) -f docker-compose.yml
GENERATED_FILES = $(foreach f,$(wildcard $(GENERATED)/*.yml),-f $(f))
# the agents named on the command line or in the environment (team's default list is not)
DEPLOY_AGENTS = $(if $(filter file,$(origin AGENTS)),,$(AGENTS))
# print a compose command, then run it unless DRY_RUN is set
run = echo "$(1)" && $(if $(DRY_RUN),:,$(1))

# BUILD_CA_FILE=FILE: extra CA certificates (PEM) for the image build only (docs/docker.md:
# "Building behind a TLS-intercepting proxy")
up:
	@services="$$(AGENTS='$(DEPLOY_AGENTS)' $(DEPLOY) agents $(GENERATED)/agents.yml)" && \
	$(if $(BUILD_CA_FILE),export BUILD_CA_CERTS="$$(cat '$(BUILD_CA_FILE)')" && )$(call run,$(DC) -f $(GENERATED)/agents.yml --profile agents up -d --build $$services)

up-redis:
	@$(DEPLOY) redis $(GENERATED)/redis.yml && \
	$(call run,$(DC) -f $(GENERATED)/redis.yml --profile redis up -d redis)

down:
	@$(call run,$(DC) $(GENERATED_FILES) --profile agents --profile redis --profile tools down --remove-orphans)

logs:
	@$(call run,$(DC) $(GENERATED_FILES) --profile agents --profile redis logs -f --tail=200$(if $(NAME), agent-$(NAME)))

who:
	@$(DEPLOY) room && $(call run,$(DC) --profile tools run --rm tail who $(ARGS))

tail:
	@$(DEPLOY) room && $(call run,$(DC) --profile tools run --rm tail tail $(ARGS))

# `make attach NAME=alice`: the agent's tmux session (detach with Ctrl-b d)
attach:
	@service="$$($(DEPLOY) service '$(NAME)' $(GENERATED)/agents.yml)" && \
	$(call run,$(DC) $(GENERATED_FILES) --profile agents exec $$service tmux -L bridge attach -t agent)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
