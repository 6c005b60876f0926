"""Rank similarity between attribution maps: Spearman (signed, absolute) and spearman_nz.

The sanity checks of Adebayo et al. (2018, arXiv 1810.03292) compare the map of a trained
model with that of a randomized one by Spearman's rank correlation, with ranks of tied
values averaged (``scipy.stats.spearmanr``'s convention; it matters on MNIST, where most
pixels are 0 and their attributions tie). Sundararajan & Taly's note (arXiv 1806.04205)
shows that taking absolute values and keeping the pixels whose attribution is zero by the
choice of baseline inflates the correlation; ``spearman_nz`` restricts the comparison to the
pixels where the input differs from the baseline. Everything here is batched over the
leading axis, jit-compatible (masks are weights, not boolean indexing) and returns ``[B]``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxgrad._filters import gaussian_matrix, separable
from jaxgrad._validation import POSITIVE, checked
from jaxgrad.types import ArrayLike


def rankdata_average(a: ArrayLike, mask: ArrayLike | None = None) -> jax.Array:
    """1-based ranks along the last axis with ties averaged (``scipy.stats.rankdata``).

    With ``mask``, elements where it is False are left out of the ranking (their rank is
    meaningless) and the others are ranked among themselves.
    """
    a = jnp.asarray(a)
    if a.ndim < 1:
        raise ValueError(f"a must have at least one axis to rank along, got shape {a.shape}")
    if mask is not None:
        mask = jnp.asarray(mask, bool)
        if mask.shape != a.shape:
            raise ValueError(f"mask must have a's shape {a.shape}, got {mask.shape}")
        a = jnp.where(mask, a, jnp.inf)
    nan_rows = (  # only entries that are ranked count (masked ones are +inf by now)
        jnp.isnan(a).any(axis=-1, keepdims=True) if jnp.issubdtype(a.dtype, jnp.floating) else None
    )
    s = jnp.sort(a, axis=-1)
    search = jnp.vectorize(
        lambda srt, v, side: jnp.searchsorted(srt, v, side=side),
        signature="(n),(n)->(n)",
        excluded={2},
    )
    lo = search(s, a, "left")
    hi = search(s, a, "right")
    ranks = (lo + hi - 1) / 2.0 + 1.0
    # NaN ranks where a row holds a NaN (scipy's nan_policy="propagate"), never finite ones
    return ranks if nan_rows is None else jnp.where(nan_rows, jnp.nan, ranks)


def _flat_pair(a, b, name_a="a", name_b="b"):
    a, b = jnp.asarray(a), jnp.asarray(b)
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape, got {a.shape} and {b.shape}"
        )
    if a.ndim < 2:
        raise ValueError(f"{name_a} must have a batch axis [B, *S], got shape {a.shape}")
    dt = jnp.promote_types(jnp.result_type(a, b), jnp.float32)
    return a.reshape(len(a), -1).astype(dt), b.reshape(len(b), -1).astype(dt)


def spearman(a: ArrayLike, b: ArrayLike, *, mask: ArrayLike | None = None) -> jax.Array:
    """Spearman's rank correlation of each pair ``a[i]``, ``b[i]`` over their flattened entries.

    Args:
      a, b: ``[B, *S]`` maps.
      mask: optional ``[B, *S]`` booleans; only entries where it is True are compared.

    Returns:
      ``[B]``; NaN where one side is constant or holds a NaN (as scipy).
    """
    a, b = _flat_pair(a, b)
    if mask is not None and jnp.size(jnp.asarray(mask)) != a.size:
        raise ValueError(
            f"mask must have a's shape [B, *S] ({a.shape[0]} x {a.shape[1]} entries), "
            f"got {jnp.shape(mask)}"
        )
    m = jnp.ones(a.shape, a.dtype) if mask is None else jnp.asarray(mask, bool).reshape(a.shape)
    m = m.astype(a.dtype)
    ra = rankdata_average(a, m > 0)
    rb = rankdata_average(b, m > 0)
    n = jnp.sum(m, axis=1, keepdims=True)
    ca = jnp.where(m > 0, ra - jnp.sum(ra * m, axis=1, keepdims=True) / n, 0.0)
    cb = jnp.where(m > 0, rb - jnp.sum(rb * m, axis=1, keepdims=True) / n, 0.0)
    rho = jnp.sum(ca * cb, axis=1) / jnp.sqrt(jnp.sum(ca * ca, axis=1) * jnp.sum(cb * cb, axis=1))
    # A NaN among the compared entries has no rank: the correlation is NaN (as scipy's).
    nan = jnp.any((jnp.isnan(a) | jnp.isnan(b)) & (m > 0), axis=1)
    return jnp.where(nan, jnp.nan, rho)


def spearman_abs(a: ArrayLike, b: ArrayLike, *, mask: ArrayLike | None = None) -> jax.Array:
    """Spearman of the absolute values (Adebayo et al.'s choice), ``[B]``."""
    return spearman(jnp.abs(jnp.asarray(a)), jnp.abs(jnp.asarray(b)), mask=mask)


def spearman_nz(
    a: ArrayLike, b: ArrayLike, x: ArrayLike, baseline: ArrayLike | float = 0.0
) -> jax.Array:
    """Sundararajan & Taly's ``spearman_nz``: absolute values, pixels where ``x != baseline``.

    Args:
      a, b: ``[B, *S]`` maps.
      x: ``[B, *S]`` inputs the maps explain.
      baseline: the attribution baseline (a number or an array broadcastable to ``x``).

    Returns:
      ``[B]``.
    """
    x = jnp.asarray(x)
    if x.shape != jnp.shape(a):
        raise ValueError(f"x must have the maps' shape {jnp.shape(a)}, got {x.shape}")
    return spearman_abs(a, b, mask=x != jnp.broadcast_to(jnp.asarray(baseline, x.dtype), x.shape))


@checked(data_range=POSITIVE, sigma=POSITIVE, truncate=POSITIVE, k1=POSITIVE, k2=POSITIVE)
def ssim(
    a: ArrayLike,
    b: ArrayLike,
    *,
    data_range: float,
    sigma: float = 1.5,
    truncate: float = 3.5,
    k1: float = 0.01,
    k2: float = 0.03,
    use_sample_covariance: bool = True,
) -> jax.Array:
    """Mean structural similarity of each pair of ``[B, H, W, C]`` maps, ``[B]``.

    The settings of ``skimage.metrics.structural_similarity(a, b, gaussian_weights=True,
    channel_axis=-1, data_range=...)``, the sanity-check paper's choice: Gaussian windows
    (sigma 1.5, truncated at 3.5 sigma: 11 taps) with reflected borders, sample covariances,
    the mean over the image without a border of the window's radius, averaged over channels.
    """
    a, b = jnp.asarray(a), jnp.asarray(b)
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(f"a and b must be [B, H, W, C] of one shape, got {a.shape} and {b.shape}")
    dt = jnp.promote_types(jnp.result_type(a, b), jnp.float32)
    a, b = a.astype(dt), b.astype(dt)
    h, w = a.shape[1:3]
    r = int(truncate * sigma + 0.5)
    win = 2 * r + 1
    if min(h, w) < win:
        r_fit = (min(h, w) - 1) // 2
        raise ValueError(
            f"ssim's Gaussian window ({win} x {win} pixels for sigma={sigma}, truncate="
            f"{truncate}) exceeds the images ({h} x {w}); scikit-image refuses it too. Use a "
            f"smaller sigma (at most {math.floor((r_fit + 0.49) / truncate * 100) / 100:g} fits) "
            "or larger images"
        )
    kw = dict(truncate=truncate, mode="reflect")
    mh = jnp.asarray(gaussian_matrix(h, sigma, **kw), dt)
    mw = jnp.asarray(gaussian_matrix(w, sigma, **kw), dt)

    def filt(z):
        return separable(z, mh, mw)

    cov_norm = win * win / (win * win - 1) if use_sample_covariance else 1.0
    ux, uy = filt(a), filt(b)
    vx = cov_norm * (filt(a * a) - ux * ux)
    vy = cov_norm * (filt(b * b) - uy * uy)
    vxy = cov_norm * (filt(a * b) - ux * uy)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    pad = (win - 1) // 2
    return jnp.mean(s[:, pad : h - pad, pad : w - pad], axis=(1, 2, 3))


def hog_similarity(
    a: np.ndarray, b: np.ndarray, *, pixels_per_cell: tuple[int, int] = (16, 16)
) -> np.ndarray:
    """Spearman between the HOG features of min-max normalised maps (host side, scikit-image).

    The sanity-check paper's metric: ``skimage.feature.hog`` of each ``[H, W, C]`` map
    (channels summed) with ``pixels_per_cell``, then Spearman between the two feature vectors.
    Not jit-compiled: scikit-image runs on the host. Returns ``[B]``.
    """
    from skimage.feature import hog

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(f"a and b must be [B, H, W, C] of one shape, got {a.shape} and {b.shape}")

    cell = tuple(np.atleast_1d(pixels_per_cell))
    if len(cell) != 2 or not all(
        isinstance(v, int | np.integer) and not isinstance(v, bool) and v >= 1 for v in cell
    ):
        raise ValueError(f"pixels_per_cell must be two positive integers, got {pixels_per_cell!r}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("a and b must be finite: a map holds NaN or infinite values")

    def feats(m):
        m = m.sum(-1)
        m = (m - m.min()) / (m.max() - m.min() + 1e-12)
        return hog(m, pixels_per_cell=pixels_per_cell, cells_per_block=(1, 1))

    fa = np.stack([feats(m) for m in a])
    fb = np.stack([feats(m) for m in b])
    return np.asarray(spearman(fa, fb))
