# `make demo`: set up and run the quickstart; `make test`: set up and run the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-test.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-test.txt
	touch $@

demo: setup
	$(PY) train.py --config=config/digits.yaml --modality=std
	$(PY) train.py --config=config/digits.yaml --modality=encoder_memory

test: setup
	$(PY) -m pytest -q -n 2 --dist loadgroup tests

bench: setup
	$(PY) bench/bench_training.py

clean:
	rm -rf $(VENV) .pytest_cache
