"""Sampling from the density implicit in a classifier's logits, and its diagnostics.

The logit ``f_y(x)`` is ``log p(x | y)`` up to a constant (Srinivas & Fleuret 2021), so its
input-gradient is the score and Langevin dynamics sample from it:

    x_{t+1} = clip(x_t + step_size * (grad f_y(x_t) - weight_decay * (x_t - decay_center))
                   + noise_scale * N(0, I)),

with ``noise_scale = sqrt(2 * step_size)`` for the exact (unadjusted) Langevin algorithm and
``noise_scale = 0`` for plain gradient ascent. ``weight_decay`` adds a Gaussian prior
``-weight_decay / 2 * |x - decay_center|^2`` to the log-density, as the activation
maximisation of Srinivas & Fleuret's code (``utils/sgld.py``: lr 0.1, wd 1e-2, centre 0.5,
500 steps from ``clip(N(0.5, 0.2^2), 0, 1)``). ``density_ratio_profile`` measures
``E[exp(f_y(x + eta) - f_y(x))]`` for ``eta ~ N(0, sigma^2 I)`` over noise levels (how
quickly the implicit density falls off around data), and ``gan_test_accuracy`` is the
accuracy of an independently trained classifier on the generated samples.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxgrad import _random
from jaxgrad._chunking import chunked_vmap
from jaxgrad._validation import (
    CLIP,
    KEY,
    LOGIT_FN,
    NONNEGATIVE,
    OPTIONAL_KEY,
    OPTIONAL_POSITIVE_INT,
    POSITIVE,
    POSITIVE_INT,
    check_inputs,
    check_positive_int,
    check_target,
    checked,
    is_concrete,
    number,
)
from jaxgrad.gradients import input_gradients, select_logits
from jaxgrad.types import ArrayLike, LogitFn, Params


@checked(
    logit_fn=LOGIT_FN,
    key=OPTIONAL_KEY,
    step_size=POSITIVE,
    noise_scale=number(0, optional=True),
    steps=POSITIVE_INT,
    clip=CLIP,
    weight_decay=NONNEGATIVE,
)
def langevin_sample(
    logit_fn: LogitFn,
    params: Params,
    x: ArrayLike,
    target: ArrayLike,
    *,
    key: jax.Array | None,
    step_size: float = 1e-2,
    noise_scale: float | None = None,
    steps: int = 100,
    clip: tuple[float, float] | None = (0.0, 1.0),
    weight_decay: float = 0.0,
    decay_center: float = 0.5,
) -> jax.Array:
    """Runs ``steps`` Langevin (or gradient-ascent) steps on ``f_y`` from ``x``.

    Args:
      logit_fn: ``(params, x) -> [B, K]``.
      params: the model's params.
      x: ``[B, *S]`` starting points (noise or data).
      target: ``[B]`` int, the class ``y`` whose density is sampled.
      key: PRNG key for the noise (None only with ``noise_scale=0``).
      step_size: the gradient step (traced).
      noise_scale: the noise std per step; ``sqrt(2 * step_size)`` (Langevin) by default,
        0 for gradient ascent.
      steps: number of steps (static).
      clip: the data range the chain is kept in, or None.
      weight_decay, decay_center: the Gaussian prior's precision and mean (traced; 0 for
        none).

    Returns:
      ``[B, *S]``, the last state of each chain.
    """
    x, target = check_inputs(x, target)
    steps = check_positive_int(steps, "steps")
    step_size = jnp.asarray(step_size, x.dtype)
    if noise_scale is None:
        noise = jnp.sqrt(2.0 * step_size)
    else:
        noise = jnp.asarray(noise_scale, x.dtype)
    deterministic = isinstance(noise_scale, (int, float)) and noise_scale == 0
    if key is None and not deterministic:
        raise ValueError("Langevin sampling needs key= (or noise_scale=0 for gradient ascent)")
    lo, hi = clip if clip is not None else (-jnp.inf, jnp.inf)
    if isinstance(weight_decay, (int, float)) and weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    wd = jnp.asarray(weight_decay, x.dtype)
    center = jnp.asarray(decay_center, x.dtype)

    def step(i, z):
        drift = input_gradients(logit_fn, params, z, target) - wd * (z - center)
        z = z + step_size * drift
        if not deterministic:
            z = z + noise * _random.normal(jax.random.fold_in(key, i), z.shape, z.dtype)
        return jnp.clip(z, lo, hi)

    return jax.lax.fori_loop(0, steps, step, x)


@checked(
    logit_fn=LOGIT_FN, step_size=POSITIVE, steps=POSITIVE_INT, clip=CLIP, weight_decay=NONNEGATIVE
)
def gradient_ascent(
    logit_fn,
    params,
    x,
    target,
    *,
    step_size=1e-2,
    steps=100,
    clip=(0.0, 1.0),
    weight_decay=0.0,
    decay_center=0.5,
):
    """Plain gradient ascent on ``f_y`` (Langevin without noise), ``[B, *S]``.

    Activation maximisation as in Srinivas & Fleuret's GAN-test: ``step_size=0.1,
    steps=500, weight_decay=1e-2`` from ``clip(N(0.5, 0.2^2), 0, 1)``.
    """
    return langevin_sample(
        logit_fn,
        params,
        x,
        target,
        key=None,
        step_size=step_size,
        noise_scale=0.0,
        steps=steps,
        clip=clip,
        weight_decay=weight_decay,
        decay_center=decay_center,
    )


@checked(logit_fn=LOGIT_FN, key=KEY, num_samples=POSITIVE_INT, chunk_size=OPTIONAL_POSITIVE_INT)
def density_ratio_profile(
    logit_fn: LogitFn,
    params: Params,
    x: ArrayLike,
    target: ArrayLike,
    *,
    key: jax.Array,
    sigmas: ArrayLike = (0.01, 0.03, 0.1, 0.3),
    num_samples: int = 32,
    chunk_size: int | None = None,
) -> jax.Array:
    """``E_eta[exp(f_y(x + eta) - f_y(x))]``, ``eta ~ N(0, sigma^2 I)``, ``[len(sigmas), B]``.

    Monte Carlo over ``num_samples`` draws per sigma (the same draws, scaled, for every
    sigma); ``chunk_size`` bounds how many draws are evaluated together.
    """
    x, target = check_inputs(x, target)
    num_samples = check_positive_int(num_samples, "num_samples")
    if is_concrete(sigmas):
        s = np.asarray(sigmas, np.float64).reshape(-1)
        if not s.size or not np.all(np.isfinite(s)) or np.any(s <= 0):
            raise ValueError(f"sigmas must be finite positive numbers, got {s.tolist()}")
    sigmas = jnp.asarray(sigmas, x.dtype).reshape(-1)
    f0 = select_logits(logit_fn(params, x), target)

    def one(k):
        eps = _random.normal(k, x.shape, x.dtype)

        def at(s):
            return jnp.exp(select_logits(logit_fn(params, x + s * eps), target) - f0)

        return jax.vmap(at)(sigmas)

    draws = chunked_vmap(one, jax.random.split(key, num_samples), chunk_size)
    return jnp.mean(draws, axis=0)


@checked(logit_fn=LOGIT_FN)
def gan_test_accuracy(
    logit_fn: LogitFn, params: Params, x: ArrayLike, target: ArrayLike
) -> jax.Array:
    """Per-sample correctness ``[B]`` of an independent classifier on generated samples ``x``.

    The mean is the GAN-test accuracy (Shmelkov et al. 2018): samples of class ``y`` that
    another model also recognises as ``y``.
    """
    x, target = check_inputs(x, target)
    logits = logit_fn(params, x)
    target = check_target(target, x.shape[0], logits.shape[-1])
    return (jnp.argmax(logits, axis=-1) == target).astype(jnp.float32)
