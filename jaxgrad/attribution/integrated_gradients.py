"""Integrated Gradients (Sundararajan, Taly & Yan 2017, arXiv 1703.01365).

``IG_i(x) = (x_i - x'_i) * integral_0^1 d f_y(x' + a (x - x')) / d x_i da``, computed with
a quadrature rule (``jaxgrad.attribution._paths``); completeness says
``sum_i IG_i = f_y(x) - f_y(x')`` up to the quadrature error, which
:func:`completeness_delta` measures for IG or any other method. All steps of all examples are batched together; ``chunk_size``
bounds memory by evaluating that many steps at a time (a ``lax.scan`` accumulating the sum),
so memory does not grow with ``steps``.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxgrad._chunking import chunked_sum
from jaxgrad._validation import (
    LOGIT_FN,
    OPTIONAL_KEY,
    OPTIONAL_POSITIVE_INT,
    POSITIVE_INT,
    broadcast_baseline,
    check_inputs,
    check_positive_int,
    checked,
)
from jaxgrad.attribution._common import multi_target
from jaxgrad.attribution._paths import quadrature
from jaxgrad.gradients import input_gradients, select_logits
from jaxgrad.types import ArrayLike, LogitFn, Params

Baseline = float | ArrayLike | Callable[[jax.Array, jax.Array], jax.Array] | None


def _baselines(baseline: Baseline, x: jax.Array, key, num_baselines: int) -> jax.Array:
    """``[N, B, *S]`` baselines from the ``baseline`` argument."""
    if callable(baseline):
        if key is None:
            raise ValueError("a sampled baseline needs key=")
        num_baselines = check_positive_int(num_baselines, "num_baselines")
        keys = jax.random.split(key, num_baselines)
        out = jax.vmap(lambda k: baseline(k, x))(keys)
        if out.shape[1:] != x.shape:
            raise ValueError(
                f"baseline(key, x) must return x's shape {x.shape}, got {out.shape[1:]}"
            )
        return out.astype(x.dtype)
    if isinstance(baseline, str):
        raise TypeError(
            f"baseline must be None, a number, an array or a function (key, x) -> [B, *S], "
            f"got the string {baseline!r}"
        )
    return broadcast_baseline(baseline, x)[None]


@checked(
    logit_fn=LOGIT_FN,
    key=OPTIONAL_KEY,
    num_baselines=POSITIVE_INT,
    steps=POSITIVE_INT,
    chunk_size=OPTIONAL_POSITIVE_INT,
)
@multi_target
def integrated_gradients(
    logit_fn: LogitFn,
    params: Params,
    x: ArrayLike,
    target: ArrayLike,
    *,
    key: jax.Array | None = None,
    baseline: Baseline = None,
    num_baselines: int = 1,
    steps: int = 50,
    rule: str = "gauss_legendre",
    chunk_size: int | None = None,
) -> jax.Array:
    """Integrated Gradients of the target logit along the straight path from a baseline.

    Args:
      logit_fn: ``(params, x [B, *S]) -> [B, K]``.
      params: the model's params.
      x: ``[B, *S]`` float.
      target: ``[B]`` int.
      key: PRNG key, needed only for a sampled baseline.
      baseline: ``None`` (zeros), a number, an array broadcastable to ``x``, or a function
        ``(key, x) -> [B, *S]`` drawn ``num_baselines`` times (results averaged, as in
        expected-gradients-style baselines).
      num_baselines: draws of a sampled baseline (static).
      steps: quadrature points (static).
      rule: ``left``, ``right``, ``middle``, ``trapezoid`` or ``gauss_legendre`` (static).
      chunk_size: steps evaluated together (static); all at once when None.

    Returns:
      ``[B, *S]`` attributions (the mean over baselines for a sampled one).

    Example:
      >>> w = jnp.array([[1., 2.], [3., 4.]])
      >>> lf = lambda p, x: x @ p.T
      >>> integrated_gradients(lf, w, jnp.ones((1, 2)), jnp.array([1]), steps=4).tolist()
      [[3.0, 4.0]]
    """
    x, target = check_inputs(x, target)
    alphas, weights = quadrature(rule, steps)
    alphas, weights = jnp.asarray(alphas, x.dtype), jnp.asarray(weights, x.dtype)
    bases = _baselines(baseline, x, key, num_baselines)

    def for_baseline(base):
        diff = x - base

        def weighted_grad(aw):
            a, w = aw
            return w * input_gradients(logit_fn, params, base + a * diff, target)

        return diff * chunked_sum(weighted_grad, (alphas, weights), chunk_size)

    return jnp.mean(jax.vmap(for_baseline)(bases), axis=0)


@checked(logit_fn=LOGIT_FN, key=OPTIONAL_KEY, num_baselines=POSITIVE_INT)
@multi_target(per_target=("attribution",))
def completeness_delta(
    logit_fn: LogitFn,
    params: Params,
    x: ArrayLike,
    target: ArrayLike,
    attribution: ArrayLike,
    *,
    key: jax.Array | None = None,
    baseline: Baseline = None,
    num_baselines: int = 1,
) -> jax.Array:
    """Completeness error ``sum(attribution) - (f_y(x) - f_y(x'))`` per example, ``[B]``.

    For Integrated Gradients (and any path method) it is the quadrature error; pass the same
    ``baseline`` (and, for a sampled one, the same ``key`` and ``num_baselines``: the draws
    are the same) as to the method, and ``f_y(x')`` is averaged over the baselines.

    With ``[B, T]`` targets and ``[B, T, *S]`` attributions (a multi-target method's output)
    it returns ``[B, T]``.

    Example:
      >>> lf = lambda p, x: x @ p.T
      >>> w, x, t = jnp.array([[1., 2.], [3., 4.]]), jnp.ones((1, 2)), jnp.array([1])
      >>> a = integrated_gradients(lf, w, x, t, steps=4)
      >>> completeness_delta(lf, w, x, t, a).tolist()
      [0.0]
    """
    x, target = check_inputs(x, target)
    attribution = jnp.asarray(attribution)
    if attribution.shape != x.shape:
        raise ValueError(f"attribution must have x's shape {x.shape}, got {attribution.shape}")
    bases = _baselines(baseline, x, key, num_baselines)
    f_x = select_logits(logit_fn(params, x), target)
    f_b = jax.vmap(lambda b: select_logits(logit_fn(params, b), target))(bases)
    axes = tuple(range(1, x.ndim))
    return jnp.sum(attribution, axis=axes) - jnp.mean(f_x[None] - f_b, axis=0)
