# Two commands a newcomer needs: `make run` (install, create the schema, load the example
# directory, start the daemon on the embedded SQLite default) and `make test`.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: install run test bench clean

$(BIN)/mailcase: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

install: $(BIN)/mailcase

run: install
	$(BIN)/mailcase init
	$(BIN)/mailcase directory import examples/directory.toml
	$(BIN)/mailcase serve

test: install
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis test-artifacts
