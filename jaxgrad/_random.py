"""Random draws that compile fast on XLA's CPU backend.

With JAX's default ``jax_threefry_partitionable=True``, a draw of a multi-dimensional shape
compiles 3-4x slower on CPU than the same number of values drawn as a flat vector (0.88 s
against 0.27 s for a ``[2, 6, 6, 1]`` normal; 2.2 s against 0.47 s under ``vmap``), and
the values are identical: partitionable threefry indexes its counter by the flattened
position. So every stochastic jaxgrad function draws flat and reshapes. The tests check the
equality with ``jax.random.normal(key, shape)``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def normal(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
    """``jax.random.normal(key, shape, dtype)``, drawn flat."""
    return jax.random.normal(key, (math.prod(shape),), dtype).reshape(shape)


def rademacher(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
    """``jax.random.rademacher(key, shape, dtype)``, drawn flat."""
    return jax.random.rademacher(key, (math.prod(shape),), dtype).reshape(shape)


def uniform(
    key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32, minval=0.0, maxval=1.0
) -> jax.Array:
    """``jax.random.uniform(key, shape, dtype, minval, maxval)``, drawn flat."""
    return jax.random.uniform(key, (math.prod(shape),), dtype, minval, maxval).reshape(shape)
