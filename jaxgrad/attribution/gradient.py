"""Plain input-gradients (saliency, Simonyan et al. 2014, arXiv 1312.6034), signed."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxgrad._validation import check_choice, check_inputs
from jaxgrad.attribution._common import multi_target
from jaxgrad.gradients import input_gradients
from jaxgrad.types import ArrayLike, LogitFn, Params

POSTPROCESS = (None, "abs", "square")


@multi_target
def gradient(
    logit_fn: LogitFn,
    params: Params,
    x: ArrayLike,
    target: ArrayLike,
    *,
    key: jax.Array | None = None,
    postprocess: str | None = None,
) -> jax.Array:
    """Gradient of the target logit with respect to the input.

    Signed by default: the absolute value or the square is an explicit, named
    post-processing, never implied.

    Args:
      logit_fn: ``(params, x [B, *S]) -> [B, K]``.
      params: the model's params.
      x: ``[B, *S]`` float.
      target: ``[B]`` int.
      key: unused (deterministic method; accepted for the common signature).
      postprocess: ``None`` (signed), ``"abs"`` or ``"square"``.

    Returns:
      ``[B, *S]``.
    """
    del key
    check_choice(postprocess, POSTPROCESS, "postprocess")
    x, target = check_inputs(x, target)
    g = input_gradients(logit_fn, params, x, target)
    if postprocess == "abs":
        return jnp.abs(g)
    if postprocess == "square":
        return jnp.square(g)
    return g


@multi_target
def gradient_x_input(
    logit_fn: LogitFn,
    params: Params,
    x: ArrayLike,
    target: ArrayLike,
    *,
    key: jax.Array | None = None,
) -> jax.Array:
    """Gradient times input (Shrikumar et al. 2016, arXiv 1605.01713), ``[B, *S]``, signed."""
    del key
    x, target = check_inputs(x, target)
    return x * input_gradients(logit_fn, params, x, target)
