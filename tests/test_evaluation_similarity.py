"""Spearman, absolute Spearman and spearman_nz against scipy and the note's Figure 1 trend."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxgrad.evaluation import (
    hog_similarity,
    rankdata_average,
    spearman,
    spearman_abs,
    spearman_nz,
    ssim,
)


def test_ranks_average_ties_like_scipy():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 5, size=(3, 40)).astype(np.float32)  # heavy ties
    np.testing.assert_allclose(rankdata_average(a), stats.rankdata(a, axis=1), rtol=0)


@pytest.mark.parametrize("tied", [False, True])
def test_spearman_equals_scipy(tied):
    rng = np.random.default_rng(1)
    shape = (6, 7, 7, 2)
    if tied:
        a = rng.integers(-2, 3, size=shape).astype(np.float32)
        b = (a * rng.integers(0, 2, size=shape) + rng.integers(0, 2, size=shape)).astype(np.float32)
    else:
        a = rng.normal(size=shape).astype(np.float32)
        b = (a + rng.normal(size=shape)).astype(np.float32)
    ours = jax.jit(spearman)(a, b)
    theirs = [stats.spearmanr(a[i].ravel(), b[i].ravel()).statistic for i in range(len(a))]
    np.testing.assert_allclose(ours, theirs, atol=1e-6)
    ours_abs = spearman_abs(a, b)
    theirs_abs = [
        stats.spearmanr(np.abs(a[i]).ravel(), np.abs(b[i]).ravel()).statistic for i in range(len(a))
    ]
    np.testing.assert_allclose(ours_abs, theirs_abs, atol=1e-6)


def test_spearman_nz_restricts_to_pixels_that_differ_from_the_baseline():
    rng = np.random.default_rng(2)
    x = rng.uniform(size=(4, 10, 10, 1)) * (rng.uniform(size=(4, 10, 10, 1)) < 0.3)
    a, b = rng.normal(size=x.shape), rng.normal(size=x.shape)
    ours = spearman_nz(a, b, x)
    for i in range(4):
        keep = x[i].ravel() != 0
        want = stats.spearmanr(np.abs(a[i].ravel()[keep]), np.abs(b[i].ravel()[keep])).statistic
        np.testing.assert_allclose(ours[i], want, atol=1e-6)
    with pytest.raises(ValueError, match="x must have the maps' shape"):
        spearman_nz(a, b, x[:, :5])
    with pytest.raises(ValueError, match="same shape"):
        spearman(a, b[:, :5])


def test_shared_zeros_inflate_absolute_spearman_as_in_the_note():
    """Two positive random vectors sharing a fraction of zeros (the note's Figure 1): the
    absolute Spearman grows with the shared zeros, >= 0.8 at 50%, while spearman_nz on the
    non-zero pixels stays near 0."""
    rng = np.random.default_rng(3)
    n, reps = 784, 200
    means = {}
    for frac in (0.0, 0.25, 0.5, 0.8):
        a = rng.uniform(size=(reps, n))
        b = rng.uniform(size=(reps, n))
        zeros = rng.uniform(size=(reps, n)).argsort(axis=1) < int(frac * n)
        a, b = np.where(zeros, 0.0, a), np.where(zeros, 0.0, b)
        means[frac] = float(jnp.mean(spearman_abs(a, b)))
        if frac == 0.5:
            nz = spearman_nz(a, b, np.where(zeros, 0.0, 1.0))
            assert abs(float(jnp.mean(nz))) < 0.02
    assert means[0.0] < 0.02 and means[0.5] >= 0.8
    assert means[0.0] < means[0.25] < means[0.5] < means[0.8]


@pytest.mark.parametrize("channels, data_range", [(1, 1.0), (3, 2.0)])
def test_ssim_equals_scikit_image(channels, data_range):
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(4)
    a = rng.uniform(size=(3, 28, 20, channels))
    b = np.clip(a + 0.3 * rng.normal(size=a.shape), 0, 1)
    b[2] = rng.uniform(size=b[2].shape)  # unrelated
    a, b = a * data_range, b * data_range
    ours = jax.jit(lambda p, q: ssim(p, q, data_range=data_range))(a, b)
    theirs = [
        structural_similarity(
            a[i], b[i], gaussian_weights=True, channel_axis=-1, data_range=data_range
        )
        for i in range(3)
    ]
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    np.testing.assert_allclose(ssim(a, a, data_range=data_range), 1.0, atol=1e-6)
    with pytest.raises(ValueError, match="one shape"):
        ssim(a, b[:, :5], data_range=1.0)


def test_hog_similarity_is_spearman_of_hog_features():
    from skimage.feature import hog

    rng = np.random.default_rng(5)
    a = rng.uniform(size=(2, 32, 32, 1))
    b = a + 0.5 * rng.normal(size=a.shape)
    ours = hog_similarity(a, b)

    def feats(m):
        m = m[..., 0]
        m = (m - m.min()) / (m.max() - m.min())
        return hog(m, pixels_per_cell=(16, 16), cells_per_block=(1, 1))

    for i in range(2):
        want = stats.spearmanr(feats(a[i]), feats(b[i])).statistic
        np.testing.assert_allclose(ours[i], want, atol=1e-6)
    np.testing.assert_allclose(hog_similarity(a, a), 1.0, atol=1e-6)


def test_ssim_refuses_images_smaller_than_its_window_and_suggests_a_sigma_that_fits():
    import re

    from jaxgrad.evaluation import ssim

    a = jnp.ones((2, 8, 8, 1))
    with pytest.raises(
        ValueError, match=r"window \(11 x 11 pixels.*exceeds the images \(8 x 8\)"
    ) as e:
        ssim(a, a, data_range=1.0)
    sigma = float(re.search(r"at most ([0-9.]+) fits", str(e.value)).group(1))
    assert np.isfinite(np.asarray(ssim(a, a, data_range=1.0, sigma=sigma))).all()
    with pytest.raises(ValueError, match=r"data_range must be a finite number in \(0, inf\]"):
        ssim(jnp.ones((1, 16, 16, 1)), jnp.ones((1, 16, 16, 1)), data_range=0.0)


def test_spearman_of_maps_holding_nan_is_nan_not_a_finite_number():
    from jaxgrad.evaluation import spearman

    a = jnp.arange(12.0).reshape(2, 6)
    b = a.at[1, 2].set(jnp.nan)
    r = np.asarray(spearman(a, b))
    assert r[0] == pytest.approx(1.0) and np.isnan(r[1])
    # A NaN outside the mask is not compared.
    mask = jnp.ones((2, 6), bool).at[1, 2].set(False)
    assert np.asarray(spearman(a, b, mask=mask))[1] == pytest.approx(1.0)
