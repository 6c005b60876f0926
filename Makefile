# make demo : set up .venv (once) and run the main job on the offline digits data set.
# make test : set up .venv (once) and run the test suite on 8 fake CPU devices.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
WORKDIR ?= runs/demo
export XLA_FLAGS ?= --xla_force_host_platform_device_count=8

.PHONY: demo test bench lint clean setup

setup: $(STAMP)

# Re-runs only when pyproject.toml or constraints.txt change: seconds when already set up.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[test,experiments]"
	touch $(STAMP)

demo: $(STAMP)
	XLA_FLAGS= $(BIN)/python -m experiments.demo --config=experiments/configs/demo.py --workdir=$(WORKDIR)

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

lint: $(STAMP)
	$(BIN)/python -m ruff check jaxgrad experiments tests benchmarks
	$(BIN)/python -m ruff format --check jaxgrad experiments tests benchmarks

bench: $(STAMP)
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[bench]"
	XLA_FLAGS= $(BIN)/python benchmarks/train_step.py
	XLA_FLAGS= $(BIN)/python benchmarks/score_matching.py

clean:
	rm -rf $(VENV) runs
