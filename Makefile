# make demo : set up .venv (once), then the tour of the papers' headline results on the offline digits.
# make test : set up .venv (once) and run the test suite on 8 fake CPU devices.
# make test-slow : the slow tests (experiment smoke runs); .ci/run runs them after make test.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
BENCH  := $(VENV)/.installed-bench
WORKDIR ?= runs/demo
# Two pytest workers: most of the suite's time is XLA compilation, which is single-threaded.
TEST_WORKERS ?= 2
export XLA_FLAGS ?= --xla_force_host_platform_device_count=8
# The offline MNIST test set the tests use (they skip, saying why, where it is missing).
export JAXGRAD_MNIST_DIR ?= $(abspath ../shared/data/mnist)

.PHONY: demo test test-slow bench lint clean setup

setup: $(STAMP)

# Re-runs only when pyproject.toml or constraints.txt change: seconds when already set up.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[test,experiments]"
	touch $(STAMP)

demo: $(STAMP)
	XLA_FLAGS= $(BIN)/python -m experiments.demo --config=experiments/configs/demo.py --workdir=$(WORKDIR)

# The test suite also compares with Captum, so it installs the bench extra (torch CPU 2.13.0).
$(BENCH): $(STAMP)
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[bench]"
	touch $(BENCH)

test: $(BENCH)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --durations=15 tests
	$(BIN)/python -m pytest -q --doctest-modules jaxgrad

# The slow tests (the experiments' smoke runs), kept out of `make test`; CI runs them after it.
test-slow: $(BENCH)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --durations=40 -m slow tests

lint: $(STAMP)
	$(BIN)/python -m ruff check jaxgrad experiments tests benchmarks notebooks
	$(BIN)/python -m ruff format --check jaxgrad experiments tests benchmarks notebooks

# make bench: the benchmark suite on this machine's backend, against PyTorch and Captum on the
# same device (benchmarks/suite.py); writes benchmarks/results/suite_<machine>.{json,md}.
# On a GPU: make bench JAX_ACCEL=cuda12 (installs jax[cuda12] into .venv first); on a TPU VM:
# make bench JAX_ACCEL=tpu (jaxgrad alone, with its FLOP utilisation). BENCH_ARGS=--tiny: CI's size.
JAX_ACCEL ?=
BENCH_ARGS ?=
bench: $(BENCH)
ifneq ($(JAX_ACCEL),)
	$(BIN)/python -m pip install -q -c constraints.txt "jax[$(JAX_ACCEL)]"
endif
	XLA_FLAGS= $(BIN)/python benchmarks/suite.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) runs
