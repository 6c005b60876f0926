"""Expected Gradients (Erion et al. 2021, arXiv 1906.10670).

``EG_i(x) = E_{x' ~ D, a ~ U(0, 1)} [(x_i - x'_i) d f_y(x' + a (x - x')) / d x_i]``: Integrated
Gradients averaged over baselines drawn from the data, estimated by Monte Carlo with one
reference and one interpolation point per sample (the paper's estimator). In expectation
``sum_i EG_i = f_y(x) - E_{x'} f_y(x')``. Draws are independent per example and come from the
explicit ``key``; ``chunk_size`` bounds memory.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxgrad._chunking import chunked_sum
from jaxgrad._validation import (
    KEY,
    LOGIT_FN,
    OPTIONAL_POSITIVE_INT,
    POSITIVE_INT,
    check_inputs,
    check_positive_int,
    checked,
)
from jaxgrad.attribution._common import multi_target
from jaxgrad.gradients import input_gradients
from jaxgrad.types import ArrayLike, LogitFn, Params


@checked(logit_fn=LOGIT_FN, key=KEY, num_samples=POSITIVE_INT, chunk_size=OPTIONAL_POSITIVE_INT)
@multi_target
def expected_gradients(
    logit_fn: LogitFn,
    params: Params,
    x: ArrayLike,
    target: ArrayLike,
    *,
    key: jax.Array,
    references: ArrayLike,
    num_samples: int = 200,
    chunk_size: int | None = None,
) -> jax.Array:
    """Monte Carlo Expected Gradients, ``[B, *S]``.

    Args:
      logit_fn: ``(params, x [B, *S]) -> [B, K]``.
      params: the model's params.
      x: ``[B, *S]`` float.
      target: ``[B]`` (or ``[B, T]``) int.
      key: PRNG key for the reference indices and interpolation points.
      references: ``[N, *S]`` data the baselines are drawn from (uniformly, with
        replacement), e.g. a sample of the training set.
      num_samples: Monte Carlo samples per example (static).
      chunk_size: samples evaluated together (static); all at once when None.
    """
    if key is None:
        raise ValueError("expected_gradients draws baselines: pass key=")
    num_samples = check_positive_int(num_samples, "num_samples")
    x, target = check_inputs(x, target)
    references = jnp.asarray(references, x.dtype)
    if references.ndim != x.ndim or references.shape[1:] != x.shape[1:] or not len(references):
        raise ValueError(
            f"references must have shape [N, *S] with S = {x.shape[1:]} and N >= 1, "
            f"got {references.shape}"
        )
    batch = x.shape[0]
    bshape = (batch,) + (1,) * (x.ndim - 1)

    def sample(k):
        k_idx, k_alpha = jax.random.split(k)
        base = references[jax.random.randint(k_idx, (batch,), 0, references.shape[0])]
        alpha = jax.random.uniform(k_alpha, (batch,), x.dtype).reshape(bshape)
        diff = x - base
        return diff * input_gradients(logit_fn, params, base + alpha * diff, target)

    return chunked_sum(sample, jax.random.split(key, num_samples), chunk_size) / num_samples
