"""ROAD: RemOve And Debias (Rong, Leemann et al. 2022, arXiv 2202.00449).

Removing pixels by setting them to a constant leaves the mask's shape in the image, and a
classifier can read the label from that shape alone (the class-stereotyped leakage seen in
ROAR/DiffROAR). ROAD replaces the removed pixels by a *noisy linear imputation*: each removed
pixel takes the weighted mean of its 8 neighbours (weight 1/6 for the 4 edge neighbours,
1/12 for the diagonal ones, neighbours outside the image left out), removed neighbours being
unknowns too, so the values solve one sparse linear system per image; Gaussian noise of std
``noise`` is then added to the imputed pixels. The reference implementation
(``tleemann/road_evaluation``, also ``quantus.ROAD``) solves the system with a sparse direct
solver per image and fraction; here every image, channel and fraction is solved at once by
conjugate gradients on the 3x3 stencil (the system is symmetric positive definite whenever at
least one pixel is kept), to a relative residual ``tol``.

:func:`road` is :func:`~jaxgrad.evaluation.pixel_perturbation` with that imputation: the
target's logit, probability and the accuracy as growing fractions of the most (MoRF) or
least (LeRF) relevant pixels are imputed, the whole curve one compiled call, and no
retraining.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxgrad import _random
from jaxgrad._chunking import merged_map
from jaxgrad._validation import (
    LOGIT_FN,
    OPTIONAL_KEY,
    check_finite,
    check_fractions,
    check_images,
    check_inputs,
    check_number,
    check_positive_int,
    checked,
    is_concrete,
)
from jaxgrad.evaluation.perturbation import (
    check_attribution,
    pixel_salience,
    removal_ranks,
    responses,
)
from jaxgrad.types import ArrayLike, LogitFn, Params

# (row offset, column offset): weight, as in the reference implementation.
_NEIGHBOURS = (
    ((1, 1), 1 / 12),
    ((0, 1), 1 / 6),
    ((-1, 1), 1 / 12),
    ((1, -1), 1 / 12),
    ((0, -1), 1 / 6),
    ((-1, -1), 1 / 12),
    ((1, 0), 1 / 6),
    ((-1, 0), 1 / 6),
)


def _shift(v, dr, dc):
    """``out[i, j] = v[i + dr, j + dc]``, 0 outside the image (``v: [..., H, W, C]``)."""
    h, w = v.shape[-3], v.shape[-2]
    pad = [(0, 0)] * (v.ndim - 3) + [(1, 1), (1, 1), (0, 0)]
    p = jnp.pad(v, pad)
    return p[..., 1 + dr : 1 + dr + h, 1 + dc : 1 + dc + w, :]


def _neighbour_sum(v):
    """``sum_n w_n v[i + n]`` over the 8 neighbours inside the image."""
    return sum(w * _shift(v, dr, dc) for (dr, dc), w in _NEIGHBOURS)


def noisy_linear_imputation(
    x: ArrayLike,
    mask: ArrayLike,
    *,
    key: jax.Array | None = None,
    noise: ArrayLike = 0.01,
    tol: float = 1e-6,
    max_iter: int | None = None,
) -> jax.Array:
    """Replaces the pixels where ``mask`` is True by ROAD's noisy linear imputation.

    Args:
      x: ``[B, H, W, C]`` images.
      mask: ``[B, H, W]`` bool, True where a pixel is removed (all its channels), or
        ``[B, H, W, C]``, True where a coordinate is removed (each channel imputed from its
        own kept neighbours).
      key: PRNG key for the noise (needed when ``noise`` is not 0).
      noise: the standard deviation of the Gaussian noise added to imputed pixels
        (traced); ROAD's default 0.01. ``noise=0`` gives the plain linear imputation.
      tol: conjugate gradients stop when every system's residual norm is below ``tol``
        times its right-hand side's norm (static).
      max_iter: the most conjugate-gradient iterations (static); ``H * W`` when None
        (enough in exact arithmetic).

    Returns:
      ``x`` with the removed pixels imputed. Where every pixel of an image (for a
      per-coordinate mask, of one of its channels) is removed the system has no data: those
      pixels are imputed as 0 (plus noise).
    """
    x = jnp.asarray(x)
    check_images(x, "x")
    mask = jnp.asarray(mask)
    if mask.shape not in (x.shape[:3], x.shape) or mask.dtype != jnp.bool_:
        raise ValueError(
            f"mask must be a bool array [B, H, W] = {x.shape[:3]} or x's shape, got "
            f"{mask.dtype} {mask.shape}"
        )
    check_number(noise, "noise", low=0.0)
    check_finite(x, "x")
    if not is_concrete(tol):
        raise ValueError("tol must be a concrete number in (0, 1) (it is static), got a tracer")
    tol = float(check_number(tol, "tol", low=0.0, high=1.0, low_open=True, high_open=True))
    h, w = x.shape[1], x.shape[2]
    max_iter = h * w if max_iter is None else check_positive_int(max_iter, "max_iter")
    if key is None and not (is_concrete(noise) and float(np.asarray(noise)) == 0.0):
        raise ValueError("noisy_linear_imputation needs key= for its noise (or noise=0)")
    m = (mask if mask.ndim == 4 else mask[..., None]).astype(x.dtype)
    # s: the total weight of each pixel's neighbours inside the image.
    s = _neighbour_sum(jnp.ones((1, h, w, 1), x.dtype))
    rhs = m * _neighbour_sum((1 - m) * x)  # the kept neighbours' contribution

    def apply(v):  # the SPD operator: removed block D - W, identity on kept pixels
        return m * (s * v - _neighbour_sum(m * v)) + (1 - m) * v

    solution = _cg(apply, rhs, tol, max_iter)
    imputed = jnp.where(m > 0, solution, x)
    if key is not None:
        eps = _random.normal(key, x.shape, x.dtype)
        imputed = imputed + m * jnp.asarray(noise, x.dtype) * eps
    return imputed


def _cg(apply, b, tol, max_iter):
    """Conjugate gradients for every ``[H, W]`` system of ``b: [..., H, W, C]`` at once."""

    def dot(u, v):
        return jnp.sum(u * v, axis=(-3, -2), keepdims=True)

    x0 = jnp.zeros_like(b)
    r0 = b
    bb = dot(b, b)
    thresh = (tol * tol) * bb

    def cond(state):
        _, r, _, rr, i = state
        return (i < max_iter) & jnp.any(rr > thresh)

    def body(state):
        x, r, p, rr, i = state
        ap = apply(p)
        pap = dot(p, ap)
        alpha = jnp.where(pap > 0, rr / jnp.where(pap > 0, pap, 1.0), 0.0)
        x = x + alpha * p
        r = r - alpha * ap
        rr_new = dot(r, r)
        beta = jnp.where(rr > 0, rr_new / jnp.where(rr > 0, rr, 1.0), 0.0)
        return x, r, r + beta * p, rr_new, i + 1

    x, *_ = jax.lax.while_loop(cond, body, (x0, r0, r0, dot(r0, r0), 0))
    return x


ROAD_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


@checked(logit_fn=LOGIT_FN, key=OPTIONAL_KEY)
def road(
    logit_fn: LogitFn,
    params: Params,
    x: ArrayLike,
    target: ArrayLike,
    attribution: ArrayLike,
    *,
    key: jax.Array | None,
    fractions=ROAD_FRACTIONS,
    order: str = "most",
    aggregate: str = "abs_sum",
    noise: ArrayLike = 0.01,
    ties: str = "stable",
    tol: float = 1e-6,
    chunk_size: int | None = None,
) -> dict[str, jax.Array]:
    """The classifier's response as growing fractions of pixels are imputed (ROAD).

    For each fraction ``m``, the ``round(m * H * W)`` pixels ranked first by ``order`` (as
    :func:`~jaxgrad.evaluation.pixel_perturbation` ranks them) are replaced by
    :func:`noisy_linear_imputation`. MoRF (``order="most"``): a faithful attribution makes
    accuracy fall fast (lower area is better); LeRF (``order="least"``): slowly.

    Args:
      logit_fn: ``(params, x) -> [B, K]``.
      params: the model's params.
      x: ``[B, H, W, C]`` images.
      target: ``[B]`` int, the class tracked (and the label accuracy is counted against).
      attribution: ``x``'s shape, the maps that rank the pixels.
      key: PRNG key for the imputation noise (one draw per fraction) and for
        ``order="random"`` or ``ties="random"``; ``None`` only with ``noise=0`` and a
        deterministic order.
      fractions: the fractions of pixels imputed (static); ROAD's 10% to 90% by default
        (Quantus's ROAD uses 1%, 3%, ..., 99%).
      order: ``most`` relevant first (MoRF), ``least`` first (LeRF) or ``random``.
      aggregate: the per-pixel salience, see :func:`~jaxgrad.evaluation.pixel_salience`;
        ``sum`` ranks by the signed attribution, as Quantus's ROAD does.
      noise: the imputation noise's standard deviation (traced), ROAD's 0.01 by default.
      ties: ``stable`` or ``random``, see :func:`~jaxgrad.evaluation.removal_ranks`.
      tol: the imputation's conjugate-gradient tolerance (static).
      chunk_size: fractions evaluated together (static);
        all at once when None. The model sees them as one merged batch of
        ``chunk_size * B`` examples (``logit_fn`` must not depend on the batch size:
        examples independent, the model contract).

    Returns:
      ``{"fractions": [F], "removed": [F] (pixels per image), "logit", "probability",
      "correct": [F, B]}``.
    """
    x, target = check_inputs(x, target)
    check_images(x, "x")
    attribution = check_attribution(attribution, x)
    check_number(noise, "noise", low=0.0)
    f = check_fractions(fractions)
    num_pixels = x.shape[1] * x.shape[2]
    removed = np.rint(f * num_pixels).astype(np.int32)
    k_rank = k_noise = None
    if key is not None:
        k_rank, k_noise = jax.random.split(key)
    ranks = removal_ranks(pixel_salience(attribution, aggregate), order, k_rank, ties=ties)
    if k_noise is None and not (is_concrete(noise) and float(np.asarray(noise)) == 0.0):
        raise ValueError("road needs key= for its imputation noise (or noise=0)")
    noise_keys = jax.random.split(k_noise, len(f)) if k_noise is not None else jnp.zeros(len(f))

    def make(args):
        count, k = args
        mask = ranks < count
        if k_noise is None:
            return noisy_linear_imputation(x, mask, noise=0.0, tol=tol)
        return noisy_linear_imputation(x, mask, key=k, noise=noise, tol=tol)

    logit, prob, correct = merged_map(
        make, responses(logit_fn, params, target), (jnp.asarray(removed), noise_keys), chunk_size
    )
    return {
        "fractions": jnp.asarray(f, x.dtype),
        "removed": jnp.asarray(removed),
        "logit": logit,
        "probability": prob,
        "correct": correct,
    }
