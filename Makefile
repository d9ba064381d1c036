# Two commands a newcomer needs: `make run` (install, create the schema, load the example
# directory, start the daemon on the embedded SQLite default) and `make test`.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: install run test bench clean constraints

$(BIN)/mailcase: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	@touch $@

install: $(BIN)/mailcase

run: install
	$(BIN)/mailcase init
	$(BIN)/mailcase directory import examples/directory.toml
	$(BIN)/mailcase serve

test: install
	$(BIN)/lint-imports --no-cache  # a cached graph outlives a checkout or rebase and can be stale
	$(BIN)/mypy
	$(BIN)/ruff check
	$(BIN)/python -m pytest

# Record the versions installed now as the ones CI installs (after a deliberate upgrade).
constraints: install
	$(BIN)/pip install --quiet --upgrade -e '.[test]'
	{ sed -n '1,2p' constraints.txt; $(BIN)/pip freeze --exclude-editable | grep -v '^mailcase'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis test-artifacts
