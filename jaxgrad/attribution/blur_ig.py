"""Blur Integrated Gradients (Xu et al. 2020, arXiv 2004.03383), with PAIR saliency's semantics.

The path goes from a heavily blurred image to the image itself through Gaussian blurs of
decreasing sigma, ``sigma_i = i * max_sigma / steps`` (or ``sqrt(i * max_sigma / steps)``
with ``sqrt=True``), ``i = 0 .. steps``. With ``z_i = blur(x, sigma_i)`` and the blur's
derivative in sigma by a forward difference,

    BlurIG(x) = - sum_{i < steps} (sigma_{i+1} - sigma_i) * (blur(x, sigma_i + grad_step) - z_i)
                / grad_step * d f_y(z_i) / d z_i,

exactly as ``saliency.core.BlurIG.GetMask`` (with ``batch_size=1``; PAIR's batched form reuses
the last step's sigma spacing for a whole batch, which differs when ``sqrt=True``). The blur is
``scipy.ndimage.gaussian_filter`` over height and width with ``mode="constant"`` (zeros outside
the image) and ``truncate=4``: a kernel of radius ``int(truncate * sigma + 0.5)`` normalised to
sum 1. It is computed here as two ``[H, H]`` and ``[W, W]`` matrices per sigma, so sigma is a
traced value and the whole path is one compiled computation; ``chunk_size`` bounds memory.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxgrad._chunking import chunked_sum
from jaxgrad._filters import gaussian_blur
from jaxgrad._validation import (
    LOGIT_FN,
    OPTIONAL_KEY,
    OPTIONAL_POSITIVE_INT,
    POSITIVE,
    POSITIVE_INT,
    check_inputs,
    check_positive_int,
    checked,
)
from jaxgrad.attribution._common import multi_target
from jaxgrad.gradients import input_gradients
from jaxgrad.types import ArrayLike, LogitFn, Params


@checked(
    logit_fn=LOGIT_FN,
    key=OPTIONAL_KEY,
    max_sigma=POSITIVE,
    steps=POSITIVE_INT,
    grad_step=POSITIVE,
    truncate=POSITIVE,
    chunk_size=OPTIONAL_POSITIVE_INT,
)
@multi_target
def blur_integrated_gradients(
    logit_fn: LogitFn,
    params: Params,
    x: ArrayLike,
    target: ArrayLike,
    *,
    key: jax.Array | None = None,
    max_sigma: float = 50.0,
    steps: int = 100,
    grad_step: float = 0.01,
    sqrt: bool = False,
    truncate: float = 4.0,
    chunk_size: int | None = None,
) -> jax.Array:
    """Blur IG of images, ``[B, H, W, C]`` (PAIR saliency's defaults).

    Args:
      logit_fn: ``(params, x [B, H, W, C]) -> [B, K]``.
      params: the model's params.
      x: ``[B, H, W, C]`` images.
      target: ``[B]`` (or ``[B, T]``) int.
      key: unused (deterministic).
      max_sigma: the blur of the path's start (static: it fixes the kernel size).
      steps: path steps (static).
      grad_step: forward-difference step in sigma.
      sqrt: square-root spacing of the sigmas.
      truncate: kernel radius in standard deviations (scipy's default 4).
      chunk_size: steps evaluated together (static); all at once when None.
    """
    del key
    steps = check_positive_int(steps, "steps")
    if not max_sigma > 0:
        raise ValueError(f"max_sigma must be > 0, got {max_sigma}")
    if not grad_step > 0:
        raise ValueError(f"grad_step must be > 0, got {grad_step}")
    x, target = check_inputs(x, target)
    if x.ndim != 4:
        raise ValueError(f"x must be images [B, H, W, C] for Blur IG, got shape {x.shape}")
    i = np.arange(steps + 1, dtype=np.float64)
    sigmas = i * max_sigma / steps
    if sqrt:
        sigmas = np.sqrt(sigmas)
    max_radius = int(truncate * (float(sigmas.max()) + grad_step) + 0.5)
    max_radius = max(max_radius, 1)
    dt = x.dtype

    def step(sd):
        sigma, d_sigma = sd
        z = gaussian_blur(x, sigma, max_radius, truncate)
        dz = (gaussian_blur(x, sigma + grad_step, max_radius, truncate) - z) / grad_step
        return d_sigma * dz * input_gradients(logit_fn, params, z, target)

    per_step = (jnp.asarray(sigmas[:-1], dt), jnp.asarray(np.diff(sigmas), dt))
    return -chunked_sum(step, per_step, chunk_size)
