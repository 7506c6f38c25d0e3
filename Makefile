# The two commands of the README: `make report` (build the study) and `make test`.
# `make report` is `jupyter-book build book/` in .venv (ARGS=--smoke: the quick smoke book).
# Both create the project's virtual environment in .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: report test benchmark clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

report: $(STAMP)  ## jupyter-book build book/: execute the out-of-date chapters, render the HTML
	$(PY) -m kbn.report $(ARGS)

test: $(STAMP)  ## the test suite (set KBN_DATA_DIR to include the real-data tests)
	$(PY) -m pytest $(ARGS)

benchmark: $(STAMP)
	$(PY) benchmarks/bench_training.py $(ARGS)

clean:  ## remove the book's outputs and the results cache (_build/ is beside _config.yml)
	rm -rf _build book/_build book/executed
