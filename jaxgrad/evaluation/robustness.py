"""Robustness of an attribution method: how much its map moves under small input noise.

:func:`sensitivity` recomputes the attribution at ``num_samples`` uniformly perturbed
copies ``x + u``, ``u ~ U[-radius, radius]`` per feature, and reports the largest (or the
average) relative change ``||a(x + u) - a(x)|| / ||a(x)||``: Captum's ``sensitivity_max``
(its defaults ``radius=0.02``, ``num_samples=10``, the Frobenius norm) and Quantus's
Max-Sensitivity and Avg-Sensitivity (Yeh et al. 2019; Quantus's defaults ``radius=0.2``,
``num_samples=200``, ``reduce="mean"`` for the average). Every perturbed copy of the batch
is explained in one compiled call (``chunk_size`` copies at a time when memory asks).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxgrad import _random
from jaxgrad._chunking import chunked_vmap, merged_map, repeat_examples
from jaxgrad._validation import (
    CALLABLE,
    LOGIT_FN,
    OPTIONAL_KEY,
    POSITIVE,
    POSITIVE_INT,
    check_choice,
    check_inputs,
    check_number,
    checked,
)
from jaxgrad.evaluation.faithfulness import _draws
from jaxgrad.types import ArrayLike, LogitFn, Params

REDUCTIONS = ("max", "mean")


@checked(
    logit_fn=LOGIT_FN, key=OPTIONAL_KEY, method=CALLABLE, radius=POSITIVE, num_samples=POSITIVE_INT
)
def sensitivity(
    logit_fn: LogitFn,
    params: Params,
    x: ArrayLike,
    target: ArrayLike,
    *,
    key: jax.Array | None,
    method: Callable[..., jax.Array],
    radius: ArrayLike = 0.02,
    num_samples: int = 10,
    reduce: str = "max",
    method_key: jax.Array | None = None,
    perturbations: ArrayLike | None = None,
    chunk_size: int | None = None,
    **method_kwargs: Any,
) -> jax.Array:
    """Max (or mean) relative change of ``method``'s attribution under uniform input noise.

    ``s = reduce_k ||method(x + u_k) - method(x)||_2 / ||method(x)||_2`` per example, the
    norm over all of an example's features (Captum's ``norm_ord="fro"``); where
    ``method(x)`` is all zero the denominator is 1, as in Captum.

    Args:
      logit_fn: ``(params, x) -> [B, K]``.
      params: the model's params.
      x: ``[B, *S]`` float.
      target: ``[B]`` int, the class explained (the same at every perturbed copy).
      key: PRNG key for the noise: sample ``k`` draws ``U[-radius, radius]`` from
        ``jax.random.split(key, num_samples)[k]``.
      method: the attribution function explained, with the common signature
        (``jaxgrad.attribution.gradient``, say; required, as Captum's ``explanation_func``).
      radius: the noise's half-width (traced); Captum's ``perturb_radius``, Quantus's
        ``lower_bound``.
      num_samples: perturbed copies (static); Captum's ``n_perturb_samples``, Quantus's
        ``nr_samples``.
      reduce: ``max`` (Captum's ``sensitivity_max``, Quantus's Max-Sensitivity) or
        ``mean`` (Quantus's Avg-Sensitivity).
      method_key: the key handed to a stochastic ``method`` (SmoothGrad, say); the same key
        at ``x`` and at every copy, so that the score measures the input's effect and not
        the method's own sampling noise. Needed only by methods that take a key.
      perturbations: optional ``[num_samples, B, *S]`` noise ``u`` to use instead of random
        draws, e.g. to replay another library's; then ``key``, ``radius`` and
        ``num_samples`` are not used.
      chunk_size: copies explained together (static); all at once when None. The copies
        are explained as one merged batch of ``chunk_size * B`` examples (the fastest way;
        ``method`` and the model must not depend on the batch size), or one call per copy
        when ``method_key`` is given or ``method_kwargs`` holds arrays (per-example values
        such as an IG baseline of ``x``'s shape). ``method``'s own ``chunk_size``, if any,
        goes through ``functools.partial(method, chunk_size=...)``.
      **method_kwargs: passed to ``method`` (e.g. ``steps=`` for IG).

    Returns:
      ``[B]``, lower is better.
    """
    check_choice(reduce, REDUCTIONS, "reduce")
    check_number(radius, "radius", low=0.0)
    x, target = check_inputs(x, target)
    draws = _draws(key, num_samples, perturbations, x, "sensitivity")
    r = jnp.asarray(radius, x.dtype)
    axes = tuple(range(1, x.ndim))

    def explain(inputs):
        if method_key is None:
            return method(logit_fn, params, inputs, target, **method_kwargs)
        return method(logit_fn, params, inputs, target, key=method_key, **method_kwargs)

    a0 = explain(x)
    norm0 = jnp.sqrt(jnp.sum(a0 * a0, axis=axes))
    norm0 = jnp.where(norm0 == 0, 1.0, norm0)

    def make(k):
        if perturbations is not None:
            return x + k
        return x + _random.uniform(k, x.shape, x.dtype, -1.0, 1.0) * r

    def change(a, copies=1):  # [copies * B, *S] -> [copies * B]
        d = a - repeat_examples(a0, copies)
        return jnp.sqrt(jnp.sum(d * d, axis=axes)) / repeat_examples(norm0, copies)

    # Every copy in one merged batch (examples are independent), unless the method needs the
    # same key at every copy or holds per-example arrays (an IG baseline of x's shape, say).
    per_example = any(isinstance(v, jax.Array | np.ndarray) for v in jax.tree.leaves(method_kwargs))
    if method_key is None and not per_example:
        s = merged_map(
            make,
            lambda xs, copies: change(
                method(logit_fn, params, xs, repeat_examples(target, copies), **method_kwargs),
                copies,
            ),
            draws,
            chunk_size,
        )
    else:  # one method call per copy
        s = chunked_vmap(lambda k: change(explain(make(k))), draws, chunk_size)
    return jnp.max(s, axis=0) if reduce == "max" else jnp.mean(s, axis=0)
