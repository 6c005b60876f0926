"""Selected logits and input-gradients of a classifier ``logit_fn(params, x) -> [B, K]``.

Because examples do not interact in evaluation mode, one reverse pass of the summed selected
logits gives every example's gradient at once (as in score_sde).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxgrad.types import ArrayLike, LogitFn, Params


def check_target(target: ArrayLike, batch: int, num_classes: int | None = None) -> jax.Array:
    """Validates ``target: int[B]`` at trace time and returns it as an array.

    Raises:
      ValueError: wrong shape, or (when concrete) a class outside ``[0, num_classes)``.
      TypeError: a non-integer dtype.
    """
    target = jnp.asarray(target)
    if target.shape != (batch,):
        raise ValueError(f"target must have shape [B] = ({batch},), got {target.shape}")
    if not jnp.issubdtype(target.dtype, jnp.integer):
        raise TypeError(f"target must be an integer array, got dtype {target.dtype}")
    if num_classes is not None and not isinstance(target, jax.core.Tracer) and target.size:
        lo, hi = int(target.min()), int(target.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(f"target must lie in [0, {num_classes}), got values in [{lo}, {hi}]")
    return target


def select_logits(logits: ArrayLike, target: ArrayLike) -> jax.Array:
    """``logits[b, target[b]]`` for each example.

    Args:
      logits: ``[B, K]`` float.
      target: ``[B]`` int in ``[0, K)``.

    Returns:
      ``[B]``.

    Example:
      >>> select_logits(jnp.array([[1., 2.], [3., 4.]]), jnp.array([1, 0])).tolist()
      [2.0, 3.0]
    """
    logits = jnp.asarray(logits)
    if logits.ndim != 2:
        raise ValueError(f"logits must have shape [B, K], got {logits.shape}")
    target = check_target(target, logits.shape[0], logits.shape[1])
    return jnp.take_along_axis(logits, target[:, None], axis=1)[:, 0]


def input_gradients(
    logit_fn: LogitFn, params: Params, x: ArrayLike, target: ArrayLike
) -> jax.Array:
    """Gradient of each example's ``target`` logit with respect to its input.

    Args:
      logit_fn: ``(params, x [B, *S]) -> logits [B, K]``, examples independent.
      params: the model's params pytree.
      x: ``[B, *S]`` float.
      target: ``[B]`` int.

    Returns:
      ``[B, *S]``: ``d logit_fn(params, x)[b, target[b]] / d x[b]``, signed.
    """
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"x must be a floating-point array, got dtype {x.dtype}")
    check_target(target, x.shape[0])

    def total(x_):
        return jnp.sum(select_logits(logit_fn(params, x_), target))

    return jax.grad(total)(x)
