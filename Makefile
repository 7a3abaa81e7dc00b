# Tideline: `make run` serves the console, `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV := $(BIN)/uv
UV_VERSION := 0.13.9

.PHONY: run test lint fmt lock install clean screenshots

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(VENV)/.base-installed: requirements/base.txt | $(BIN)/python
	$(UV) pip install --quiet --python $(BIN)/python -r requirements/base.txt
	touch $@

$(VENV)/.dev-installed: requirements/dev.txt | $(BIN)/python
	$(UV) pip install --quiet --python $(BIN)/python -r requirements/dev.txt
	touch $@

install: $(VENV)/.base-installed

# Without DATABASE_URL (try-out mode) the console comes with a simulated company feeding it.
run: $(VENV)/.base-installed
	$(BIN)/python manage.py serve $(if $(DATABASE_URL),,--demo)

# The README tour's pictures, from a fresh simulated world (serve --demo in a temporary home;
# Chromium from apt). Against a running demo instead: SCREENSHOTS_ARGS="--url URL --password P".
screenshots: $(VENV)/.dev-installed
	$(BIN)/python docs/screenshots.py $(SCREENSHOTS_ARGS)

test: $(VENV)/.dev-installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	# mypy only imports the settings; nothing connects to these.
	DATABASE_URL=postgresql://localhost/typecheck REDIS_URL=redis://localhost/0 $(BIN)/mypy console tracing replay tests
	$(BIN)/python manage.py makemigrations --check --dry-run

fmt: $(VENV)/.dev-installed
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Re-pin every dependency after a change to pyproject.toml.
lock: | $(BIN)/python
	$(UV) pip compile --quiet --python-version 3.11 pyproject.toml -o requirements/base.txt
	$(UV) pip compile --quiet --python-version 3.11 --extra dev pyproject.toml -o requirements/dev.txt

clean:
	rm -rf $(VENV) test-results
