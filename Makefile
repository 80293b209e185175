# Quickstart targets: each sets up its own virtual environment (pinned by constraints.txt).
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
# Extra pytest arguments, e.g. make test PYTEST_ARGS="-m 'not slow'"
PYTEST_ARGS ?=

.PHONY: demo test setup clean

## Train a small attention model on the embedded default task, print BLEU, exact match,
## a few translations, and write an alignment plot to artifacts/.
demo: $(VENV)/.installed
	$(BIN)/python -m seqlearn.demo

## Run the whole test suite (slow and browser tests included).
test: $(VENV)/.installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev,notebook,export]"
	touch $@

clean:
	rm -rf $(VENV) artifacts .pytest_cache
