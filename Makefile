# The two commands a new user needs (see README):
#   make demo   - whole pipeline locally on generated sample data, then serve and query it
#   make test   - the full test suite (what CI runs)
# Both create .venv on first use and install the project into it; nothing else is needed.

PYTHON ?= python3.11
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed
DEMO   ?= demo

.PHONY: demo test test-quick venv clean help
help:
	@echo "make demo        run the whole pipeline locally on sample data, then serve and query it"
	@echo "make test        run every test (as CI does)"
	@echo "make test-quick  skip the slow and end-to-end tests"

venv: $(STAMP)
$(STAMP): pyproject.toml requirements.lock
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or run 'make PYTHON=/path/to/python3.11'"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip uv
	$(BIN)/uv pip install --python $(BIN)/python -r requirements.lock
	$(BIN)/uv pip install --python $(BIN)/python --no-deps -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m homefeed.demo --workdir $(DEMO)

test: $(STAMP)
	$(BIN)/python -m pytest -p no:cacheprovider

test-quick: $(STAMP)
	$(BIN)/python -m pytest -p no:cacheprovider -m "not slow and not e2e"

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache
