# Two commands on a fresh machine: `make demo` and `make test`. Both build .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall only when the requirements, their locks or the package metadata change. The
# lock pins every package with its hashes, so every machine installs the same files;
# tests/deploy/test_requirements_lock.py fails when it falls behind requirements*.txt.
$(STAMP): $(BIN)/python requirements.txt requirements-dev.txt requirements-dev.lock pyproject.toml
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements-dev.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/analytics-refresh demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Worker processes for the suite, each with its own embedded PostgreSQL. Most tests wait on
# servers, subprocesses and deadlines rather than the CPU, so four fit on two cores. The
# tests marked `alone` run after them, by themselves.
TEST_WORKERS ?= 4

# The installer tests need Debian's cron and systemd-analyze; the script installs them
# when it can (root with apt-get) and says so when it cannot.
test: lint
	bash scripts/install-test-tools.sh
	@echo "The whole suite (a real PostgreSQL, servers, crontabs) takes a few minutes;"
	@echo "one file: $(BIN)/python -m pytest -q tests/test_run.py"
	$(BIN)/python -m pytest -n $(TEST_WORKERS) -m "not alone"
	$(BIN)/python -m pytest -m alone

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
