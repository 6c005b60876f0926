"""Input validation shared by the attribution methods."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxgrad.gradients import check_target


def check_inputs(x, target) -> tuple[jax.Array, jax.Array]:
    """Validates ``x: [B, *S]`` float and ``target: int[B]``; rejects NaN/inf in concrete ``x``.

    Shapes and dtypes are checked at trace time; values only when ``x`` is concrete (an
    eager call), since a check inside ``jit`` would need a host sync.
    """
    if not isinstance(x, jax.core.Tracer):
        arr = np.asarray(x)
        if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
            bad = np.flatnonzero(~np.isfinite(arr.reshape(len(arr), -1)).all(axis=1))
            raise ValueError(
                f"x contains NaN or infinite values in {len(bad)} example(s), first at index {bad[0]}"
            )
    x = jnp.asarray(x)
    if x.ndim < 2:
        raise ValueError(f"x must have a batch axis and features [B, *S], got shape {x.shape}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"x must be a floating-point array, got dtype {x.dtype}")
    return x, check_target(target, x.shape[0])
