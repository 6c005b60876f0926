"""Separable linear filters on ``[B, H, W, C]`` images, written as two small matrices.

One helper, :func:`separable`, applies an ``[H', H]`` and a ``[W', W]`` matrix over height and
width (channels untouched); the matrices come from:

* :func:`gaussian_matrix`: a 1-D Gaussian blur with scipy's ``gaussian_filter`` conventions
  (radius ``int(truncate * sigma + 0.5)``, weights normalised to 1), with zero padding
  (``mode="constant"``, Blur IG and the blur fill of pixel perturbation; sigma may be traced)
  or reflected borders (``mode="reflect"``, SSIM; sigma static);
* :func:`interpolation_matrix`: bilinear resizing with PyTorch's ``F.interpolate`` rule
  (Grad-CAM, FullGrad).

Writing a filter as two matrices makes a traced sigma cheap (one compiled program for every
sigma) and keeps every filter exactly equal to its scipy / PyTorch reference.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def separable(x: jax.Array, mh: jax.Array, mw: jax.Array) -> jax.Array:
    """``[B, H, W, C] -> [B, H', W', C]``: ``mh [H', H]`` over height, ``mw [W', W]`` over width."""
    return jnp.einsum("Hh,bhwc,Ww->bHWc", mh, x, mw)


def gaussian_matrix(
    n: int, sigma, *, max_radius: int | None = None, truncate: float = 4.0, mode: str = "constant"
):
    """``[n, n]`` matrix of a 1-D Gaussian blur (scipy's ``gaussian_filter1d`` conventions).

    Args:
      n: length of the axis.
      sigma: standard deviation; traced with ``mode="constant"`` (then ``max_radius`` must
        bound ``int(truncate * sigma + 0.5)``), a Python float with ``mode="reflect"``.
        Sigma 0 gives the identity.
      max_radius: static bound on the kernel radius (``mode="constant"`` only).
      truncate: kernel radius in standard deviations.
      mode: ``"constant"`` (zeros outside the axis, a jax array) or ``"reflect"``
        (``d c b a | a b c d``, a numpy array).
    """
    if mode == "reflect":
        return _reflect_gaussian(n, float(sigma), truncate)
    if mode != "constant":
        raise ValueError(f"mode must be 'constant' or 'reflect', got {mode!r}")
    if max_radius is None:
        raise ValueError("a zero-padded Gaussian with a traced sigma needs max_radius")
    sigma = jnp.asarray(sigma)
    k = jnp.arange(-max_radius, max_radius + 1, dtype=sigma.dtype)
    radius = jnp.floor(truncate * sigma + 0.5)
    safe = jnp.where(sigma > 0, sigma, 1.0)
    w = jnp.where(jnp.abs(k) <= radius, jnp.exp(-0.5 * (k / safe) ** 2), 0.0)
    w = w / jnp.sum(w)
    offset = np.arange(n)[None, :] - np.arange(n)[:, None]  # column j reads input j - i
    inside = np.abs(offset) <= max_radius
    m = jnp.where(inside, w[np.clip(offset + max_radius, 0, 2 * max_radius)], 0.0)
    return jnp.where(sigma > 0, m, jnp.eye(n, dtype=m.dtype))


def _reflect_gaussian(n: int, sigma: float, truncate: float) -> np.ndarray:
    r = int(truncate * sigma + 0.5)
    k = np.arange(-r, r + 1)
    w = np.exp(-0.5 * (k / sigma) ** 2)
    w /= w.sum()
    m = np.zeros((n, n))
    for i in range(n):
        for off, wk in zip(k, w, strict=True):
            p = i + off
            while p < 0 or p >= n:  # reflect until inside (kernels wider than the image)
                p = -p - 1 if p < 0 else 2 * n - p - 1
            m[i, p] += wk
    return m


def gaussian_blur(x: jax.Array, sigma, max_radius: int, truncate: float = 4.0) -> jax.Array:
    """Blurs ``[B, H, W, C]`` images over height and width (not channels), zero-padded.

    ``sigma`` may be traced; ``max_radius`` is a static bound on the kernel radius.
    """
    kw = dict(max_radius=max_radius, truncate=truncate)
    mh = gaussian_matrix(x.shape[1], sigma, **kw).astype(x.dtype)
    mw = gaussian_matrix(x.shape[2], sigma, **kw).astype(x.dtype)
    return separable(x, mh, mw)


def interpolation_matrix(n_in: int, n_out: int, *, align_corners: bool) -> np.ndarray:
    """``[n_out, n_in]`` linear-interpolation weights (PyTorch's ``F.interpolate`` rule)."""
    i = np.arange(n_out, dtype=np.float64)
    if align_corners:
        src = i * ((n_in - 1) / (n_out - 1)) if n_out > 1 else np.zeros_like(i)
    else:
        src = np.maximum((i + 0.5) * (n_in / n_out) - 0.5, 0.0)
    lo = np.minimum(np.floor(src).astype(int), n_in - 1)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = src - lo
    m = np.zeros((n_out, n_in))
    np.add.at(m, (np.arange(n_out), lo), 1.0 - frac)
    np.add.at(m, (np.arange(n_out), hi), frac)
    return m


def resize_bilinear(maps: jax.Array, size: tuple[int, int], *, align_corners: bool) -> jax.Array:
    """Bilinear resize of ``[B, h, w, C]`` maps to ``[B, *size, C]``, as PyTorch's ``interpolate``.

    ``align_corners=True`` maps corner pixels onto corner pixels (FullGrad's choice);
    ``False`` uses half-pixel centres (``jax.image.resize``'s rule when upsampling).
    """
    mh = jnp.asarray(interpolation_matrix(maps.shape[1], size[0], align_corners=align_corners))
    mw = jnp.asarray(interpolation_matrix(maps.shape[2], size[1], align_corners=align_corners))
    return separable(maps, mh.astype(maps.dtype), mw.astype(maps.dtype))
