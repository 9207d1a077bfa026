# `make demo`: set up and run the quickstart; `make test`: set up and run the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test bench clean browser

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-test.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-test.txt
	touch $@

demo: setup
	$(PY) train.py --config=config/digits.yaml --modality=std
	$(PY) train.py --config=config/digits.yaml --modality=encoder_memory
	@$(PY) scripts/quickstart_summary.py models

# The report's browser test opens a page in Debian's chromium (installed here when missing: needs apt-get and root).
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium) \
	  || (echo "make test needs Debian's chromium for tests/test_report.py: apt-get install chromium" && exit 1)

test: setup browser
	$(PY) -m pytest -q -n 2 --dist loadgroup tests

bench: setup
	$(PY) -m bench.bench_training

clean:
	rm -rf $(VENV) .pytest_cache
