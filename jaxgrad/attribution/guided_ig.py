"""Guided Integrated Gradients (Kapishnikov et al. 2021, arXiv 2106.09788), PAIR saliency's semantics.

Instead of the straight line, the path moves at each of ``steps`` steps the ``fraction`` of
features with the smallest absolute gradient toward the input, keeping every feature within
``max_dist`` (in the straight path's alpha) of the straight-line schedule, until the L1
distance to the input has shrunk to ``(1 - step / steps)`` of the total; attribution
accumulates ``(x_new - x_old) * gradient`` along the way. This follows
``saliency.core.guided_ig.guided_ig_impl`` step by step (the same selection with NumPy's
``quantile(..., "lower")``, the same stopping test ``isclose`` with tolerance 1e-9), with
every example of the batch advanced together: one batched gradient per step (``steps`` model
calls in all), then the per-example inner loop as a vmapped ``lax.while_loop``. PAIR computes
in float64; in float32 the stopping tolerance is widened to a few float32 ulps, which changes
only rounding-level decisions. Completeness holds by construction: ``sum(GuidedIG)``
approximates ``f_y(x) - f_y(baseline)`` as IG's Riemann sum does. An inner loop that cannot
progress (every selectable feature already at its bound, which PAIR would loop on forever)
ends the step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxgrad._validation import (
    LOGIT_FN,
    OPTIONAL_KEY,
    POSITIVE_INT,
    broadcast_baseline,
    check_inputs,
    check_number,
    check_positive_int,
    checked,
)
from jaxgrad.attribution._common import multi_target
from jaxgrad.gradients import input_gradients
from jaxgrad.types import ArrayLike, LogitFn, Params


def _isclose(a, b, tol):
    return jnp.abs(a - b) <= jnp.maximum(tol * jnp.maximum(jnp.abs(a), jnp.abs(b)), tol)


@checked(logit_fn=LOGIT_FN, key=OPTIONAL_KEY, steps=POSITIVE_INT)
@multi_target
def guided_integrated_gradients(
    logit_fn: LogitFn,
    params: Params,
    x: ArrayLike,
    target: ArrayLike,
    *,
    key: jax.Array | None = None,
    baseline: float | ArrayLike | None = None,
    steps: int = 200,
    fraction: float = 0.25,
    max_dist: float = 0.02,
) -> jax.Array:
    """Guided IG, ``[B, *S]`` (PAIR saliency's defaults: 200 steps, fraction 0.25, max_dist 0.02).

    Args:
      logit_fn: ``(params, x [B, *S]) -> [B, K]``.
      params: the model's params.
      x: ``[B, *S]`` float.
      target: ``[B]`` (or ``[B, T]``) int.
      key: unused (deterministic).
      baseline: ``None`` (zeros), a number or an array broadcastable to ``x``.
      steps: path steps, one batched gradient each (static).
      fraction: share of features moved per inner iteration, in ``(0, 1]`` (static).
      max_dist: largest deviation from the straight path, in alpha, in ``[0, 1]``.
    """
    del key
    steps = check_positive_int(steps, "steps")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction}")
    check_number(max_dist, "max_dist", low=0.0, high=1.0)
    x, target = check_inputs(x, target)
    dt = x.dtype
    base = broadcast_baseline(baseline, x)
    batch, n = x.shape[0], int(np.prod(x.shape[1:]))
    x_in, x_base = x.reshape(batch, n), base.reshape(batch, n)
    diff = x_in - x_base
    l1_total = jnp.sum(jnp.abs(diff), axis=1)
    q_index = int(np.floor(fraction * (n - 1)))  # NumPy's quantile(method="lower")
    tol = max(1e-9, 8 * float(jnp.finfo(dt).eps))
    max_dist = jnp.asarray(max_dist, dt)

    def inner(x0, attr0, grad_actual, xi, xb, d, l1_tot, step):
        alpha = (step + 1.0) / steps
        alpha_min = jnp.maximum(alpha - max_dist, 0.0)
        alpha_max = jnp.minimum(alpha + max_dist, 1.0)
        x_min, x_max = xb + d * alpha_min, xb + d * alpha_max
        l1_target = l1_tot * (1.0 - (step + 1.0) / steps)
        nonzero = d != 0

        def cond(c):
            _, _, _, gamma, done, it = c
            return (~done) & (gamma > 1.0) & (it <= n)

        def body(c):
            xc, attr, grad, _, _, it = c
            x_old = xc
            x_alpha = jnp.where(nonzero, (xc - xb) / jnp.where(nonzero, d, 1.0), alpha_max)
            xc = jnp.where(x_alpha < alpha_min, x_min, xc)
            l1_current = jnp.sum(jnp.abs(xc - xi))
            close = _isclose(l1_target, l1_current, tol)
            grad = jnp.where(xc == x_max, jnp.inf, grad)
            threshold = jnp.sort(jnp.abs(grad))[q_index]
            s = (jnp.abs(grad) <= threshold) & (grad != jnp.inf)
            l1_s = jnp.sum(jnp.abs(xc - x_max) * s)
            gamma = jnp.where(
                l1_s > 0, (l1_current - l1_target) / jnp.where(l1_s > 0, l1_s, 1.0), jnp.inf
            )
            moved = jnp.where(gamma > 1.0, x_max, xc + (x_max - xc) * gamma)
            xc = jnp.where(close, xc, jnp.where(s, moved, xc))
            attr = attr + (xc - x_old) * grad_actual
            stuck = l1_s <= 0  # nothing left to move: PAIR would loop forever
            return xc, attr, grad, gamma, close | stuck, it + 1

        init = (x0, attr0, grad_actual, jnp.asarray(jnp.inf, dt), jnp.asarray(False), 0)
        xf, attrf, *_ = jax.lax.while_loop(cond, body, init)
        return xf, attrf

    def outer(carry, step):
        xc, attr = carry
        grads = input_gradients(logit_fn, params, xc.reshape(x.shape), target).reshape(batch, n)
        xc, attr = jax.vmap(inner, in_axes=(0, 0, 0, 0, 0, 0, 0, None))(
            xc, attr, grads, x_in, x_base, diff, l1_total, step
        )
        return (xc, attr), None

    step_ids = jnp.arange(steps, dtype=dt)
    (_, attr), _ = jax.lax.scan(outer, (x_base, jnp.zeros_like(x_in)), step_ids)
    return attr.reshape(x.shape)
