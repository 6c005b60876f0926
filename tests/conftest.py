"""Test configuration: 8 fake CPU devices, strict rank promotion, shared fixtures.

The device count must be set before JAX initialises its backend; CI also exports
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` (Makefile), which is equivalent.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax
import pytest

if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    jax.config.update("jax_num_cpu_devices", 8)
jax.config.update("jax_numpy_rank_promotion", "raise")

REPO = Path(__file__).resolve().parents[1]
MNIST_DIR = (REPO.parent / "shared" / "data" / "mnist").resolve()


@pytest.fixture
def key():
    return jax.random.key(0)


@pytest.fixture
def x64():
    """Runs a test in float64."""
    with jax.enable_x64(True):
        yield


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    if not (MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file():
        raise FileNotFoundError(f"the shared MNIST test set is expected at {MNIST_DIR}")
    return MNIST_DIR
