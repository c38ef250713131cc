# Every target creates/updates the local venv itself: a fresh clone needs only Python 3.11+.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test check lint typecheck imports bench venv clean bytecode

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

# The project's own modules compiled once (pip compiled the dependencies at install): with
# PYTHONDONTWRITEBYTECODE set, as on some CI machines and in the image, every worker process
# would otherwise compile agent_runtime/ again at each start (docs/benchmarks.md, start time).
# Only changed files are compiled again.
bytecode: $(STAMP)
	@$(BIN)/python -m compileall -q -j 0 agent_runtime agents protocols >/dev/null

demo: $(STAMP) bytecode
	$(BIN)/agent-runtime run "list files in configs and read configs/policy.yaml and run uptime then count words in configs/policy.yaml" --timeout 60
	@echo "Next, the live dashboard: 'agent-runtime up', then 'agent-runtime serve' with a token (README, \"From any language\") and open http://127.0.0.1:8080/"

# The test files are spread over TEST_WORKERS processes (pytest-xdist; a whole file stays in
# one process, so module fixtures start once); each process starts its own embedded server.
# TEST_WORKERS=0 runs everything in this process. Four on two cores: the suite mostly waits
# on worker processes and servers (about one core busy with two processes; on an idle 2-core
# machine 3 processes took 251 s, 4 took 236 s: docs/benchmarks.md).
TEST_WORKERS ?= 4

test: $(STAMP) bytecode
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

check: lint typecheck imports

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# the import contract in pyproject.toml [tool.importlinter]: only transport/ imports redis,
# the library never imports agents/, the default pipeline's payloads, or the CLI
imports: $(STAMP)
	$(BIN)/lint-imports --no-cache

bench: $(STAMP) bytecode
	$(BIN)/python benchmarks/single_hop.py
	$(BIN)/python benchmarks/scaling.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
