"""SmoothGrad, SmoothGrad^2 and VarGrad around any attribution method.

SmoothGrad (Smilkov et al. 2017, arXiv 1706.03825) averages an attribution over noisy
copies ``x + eps``, ``eps ~ N(0, sigma^2 I)``, with ``sigma = noise_level * (max(x_b) -
min(x_b))`` per example (the fraction of the input range, PAIR saliency's ``stdev_spread``).
``statistic="square"`` averages the squared attributions (SmoothGrad^2, Hooker et al. 2019)
and ``"variance"`` returns their variance (VarGrad, Adebayo et al. 2018). The noise is drawn
from the explicit ``key``; samples are evaluated ``chunk_size`` at a time with running sums,
so memory does not grow with ``num_samples``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxgrad import _random
from jaxgrad._chunking import chunked_sum
from jaxgrad._validation import (
    CALLABLE,
    KEY,
    LOGIT_FN,
    OPTIONAL_POSITIVE_INT,
    POSITIVE_INT,
    check_choice,
    check_inputs,
    check_number,
    check_positive_int,
    checked,
)
from jaxgrad.attribution._common import multi_target
from jaxgrad.attribution.gradient import gradient
from jaxgrad.types import ArrayLike, LogitFn, Params

STATISTICS = ("mean", "square", "variance")


def _check_method_kwargs(method, method_kwargs) -> None:
    """Names an option that ``method`` does not take (rather than letting it fail inside)."""
    try:
        params = inspect.signature(method).parameters
    except (TypeError, ValueError):  # no signature to check against
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    unknown = sorted(set(method_kwargs) - set(params))
    if unknown:
        name = getattr(method, "__name__", type(method).__name__)
        raise TypeError(
            f"smoothgrad got {unknown}, which are neither smoothgrad's options nor options of "
            f"method={name}"
        )


@checked(
    logit_fn=LOGIT_FN,
    key=KEY,
    method=CALLABLE,
    num_samples=POSITIVE_INT,
    chunk_size=OPTIONAL_POSITIVE_INT,
)
@multi_target
def smoothgrad(
    logit_fn: LogitFn,
    params: Params,
    x: ArrayLike,
    target: ArrayLike,
    *,
    key: jax.Array,
    method: Callable[..., jax.Array] = gradient,
    noise_level: ArrayLike = 0.15,
    num_samples: int = 50,
    statistic: str = "mean",
    chunk_size: int | None = None,
    **method_kwargs: Any,
) -> jax.Array:
    """Averages ``method`` over Gaussian perturbations of the input.

    Args:
      logit_fn: ``(params, x [B, *S]) -> [B, K]``.
      params: the model's params.
      x: ``[B, *S]`` float.
      target: ``[B]`` int.
      key: PRNG key for the noise (consumed); each sample's ``method`` call gets its own
        sub-key too (for stochastic methods).
      method: any attribution function with the common signature (``gradient`` by
        default; ``integrated_gradients`` gives IG-SmoothGrad).
      noise_level: noise std as a fraction of each example's value range (traced).
      num_samples: noisy copies (static).
      statistic: of the noisy attributions: ``mean`` (SmoothGrad), ``square`` (the mean of
        the squares, SmoothGrad^2) or ``variance`` (VarGrad).
      chunk_size: samples evaluated together (static); all at once when None.
      **method_kwargs: passed to ``method`` (e.g. ``steps=`` for IG).

    Returns:
      ``[B, *S]``.
    """
    check_choice(statistic, STATISTICS, "statistic")
    _check_method_kwargs(method, method_kwargs)
    num_samples = check_positive_int(num_samples, "num_samples")
    check_number(noise_level, "noise_level", low=0.0)
    x, target = check_inputs(x, target)
    axes = tuple(range(1, x.ndim))
    span = jnp.max(x, axis=axes, keepdims=True) - jnp.min(x, axis=axes, keepdims=True)
    sigma = jnp.asarray(noise_level, x.dtype) * span

    def sums(k):
        k_noise, k_method = jax.random.split(k)
        noisy = x + sigma * _random.normal(k_noise, x.shape, x.dtype)
        a = method(logit_fn, params, noisy, target, key=k_method, **method_kwargs)
        return a, a * a

    total, total_sq = chunked_sum(sums, jax.random.split(key, num_samples), chunk_size)
    mean, mean_sq = total / num_samples, total_sq / num_samples
    if statistic == "mean":
        return mean
    if statistic == "square":
        return mean_sq
    return jnp.maximum(mean_sq - mean * mean, 0.0)
