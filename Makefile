# Set-up, demo and tests in a local virtual environment (.venv).
# TORCH picks the PyTorch wheel: the default pin is the CPU/CUDA build PyPI serves for your platform;
# e.g. `make demo TORCH=torch` takes the newest release.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint fuzz clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/r3l demo --out-dir demo_out

test: $(STAMP)
	$(BIN)/python -m pytest -q --durations=15

lint: $(STAMP)
	$(BIN)/ruff check .

fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=fuzz $(BIN)/python -m pytest -q -p no:warnings tests/test_fuzz.py

clean:
	rm -rf $(VENV) demo_out runs .pytest_cache
