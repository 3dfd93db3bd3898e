# Two commands a new user needs (README): `make demo` and `make test`.
# Both create .venv from the project's own files on first use; re-runs reinstall only
# when pyproject.toml changed (the package is installed editable, so code changes need
# no reinstall).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[cpu,train,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/edge-demo

lint: $(STAMP)
	$(BIN)/ruff check .

test: lint
	$(BIN)/pytest -q

clean:
	rm -rf $(VENV) demo-output build .pytest_cache .ruff_cache
