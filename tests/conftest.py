"""Test configuration: 8 fake CPU devices, strict rank promotion, shared fixtures.

The device count must be set before JAX initialises its backend; CI also exports
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` (Makefile), which is equivalent.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgrad.models import MLP, MnistCNN, init_variables, linen_logit_fn

if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    jax.config.update("jax_num_cpu_devices", 8)
jax.config.update("jax_numpy_rank_promotion", "raise")

REPO = Path(__file__).resolve().parents[1]
# The offline MNIST files (IDX, test set only): JAXGRAD_MNIST_DIR (the Makefile passes the
# project's copy beside the repository). Tests that need them skip, with the reason, where
# they are missing, unless JAXGRAD_REQUIRE_MNIST=1 (as .ci/run sets): then they fail.
MNIST_DIR = Path(
    os.environ.get("JAXGRAD_MNIST_DIR") or REPO.parent / "shared" / "data" / "mnist"
).resolve()


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
        reason = (
            f"the offline MNIST test set (t10k-*-idx*-ubyte.gz) is not at {MNIST_DIR}; "
            "set JAXGRAD_MNIST_DIR to a folder holding it"
        )
        if os.environ.get("JAXGRAD_REQUIRE_MNIST") == "1":
            pytest.fail(reason + " (JAXGRAD_REQUIRE_MNIST=1: CI never skips these tests)")
        pytest.skip(reason)
    return MNIST_DIR


@pytest.fixture(scope="session")
def gaussian():
    """``gaussian(key, d)``: a Gaussian log-density with a non-diagonal precision, H = -P."""

    def gaussian(key, d=6):
        """A Gaussian log-density with a non-diagonal precision P: H = -P everywhere."""
        a = jax.random.normal(key, (d, d), jnp.float64)
        precision = a @ a.T / d + jnp.eye(d)
        mean = jnp.linspace(-1.0, 1.0, d)

        def f(x):  # [B, d] -> [B]
            z = x - mean[None]
            return -0.5 * jnp.einsum("bi,ij,bj->b", z, precision, z)

        return f, precision, mean

    return gaussian


@pytest.fixture(scope="session")
def taylor_rounding():
    """``taylor_rounding(f, x, sigma)``: the float32 rounding bound of the Taylor estimate."""

    def taylor_rounding(f, x, sigma):
        """Float32 rounding bound of the Taylor estimate: (2 / sigma^2) * a few ulps of |f|.

        f(x + v) - f(x) cancels catastrophically for small sigma, so programs that round
        differently (jit fusion, another device count) legitimately differ by this much.
        """
        return float(2 / sigma**2 * 8 * np.finfo(np.float32).eps * jnp.max(jnp.abs(f(x))))

    return taylor_rounding


@pytest.fixture(scope="module")
def small_cnns():
    x = jax.random.uniform(jax.random.key(3), (2, 6, 6, 1), minval=0.1, maxval=0.9)
    out = {}
    for act in ("softplus", "relu"):
        model = MnistCNN(activation=act, beta=3.0)
        variables = init_variables(model, jax.random.key(1), x[:1])
        out[act] = (linen_logit_fn(model), variables)
    return out, x


@pytest.fixture(scope="module")
def smooth_mlp():
    """A small softplus MLP: smooth everywhere (no ReLU or max-pool kinks)."""
    model = MLP(hidden=(32, 16), activation="softplus", beta=3.0)
    x = jax.random.uniform(jax.random.key(3), (2, 6, 6, 1), minval=0.1, maxval=0.9)
    variables = init_variables(model, jax.random.key(1), x[:1])
    return (linen_logit_fn(model), variables), x
