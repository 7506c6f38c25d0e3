# The two commands of the README: `make report` (build the study) and `make test`.
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

report: $(STAMP)  ## run the four notebooks with papermill, then build the HTML book
	$(PY) -m kbn.report $(ARGS)

test: $(STAMP)  ## the test suite (set KBN_DATA_DIR to include the real-data tests)
	$(PY) -m pytest $(ARGS)

benchmark: $(STAMP)
	$(PY) benchmarks/bench_training.py $(ARGS)

clean:  ## remove the report's outputs (jupyter-book writes _build/ beside _config.yml)
	rm -rf _build book/_build book/executed book/figures
