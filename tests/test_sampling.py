"""Sampling from the implicit density: a Gaussian logit gives Gaussian samples; the density
ratio profile against its closed form; GAN-test accuracy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgrad.evaluation import (
    density_ratio_profile,
    gan_test_accuracy,
    gradient_ascent,
    langevin_sample,
)

MU = jnp.array([0.5, -1.0, 2.0])


def gaussian(params, x):
    """Class 0: log N(x; mu, I) + const; class 1: its negative."""
    f = -0.5 * jnp.sum((x - params[None]) ** 2, axis=1)
    return jnp.stack([f, -f], axis=1)


def test_langevin_samples_the_gaussian_and_ascent_finds_its_mode(x64):
    n = 4000
    x0 = jax.random.normal(jax.random.key(0), (n, 3)) * 3.0
    t = jnp.zeros(n, jnp.int32)
    samples = jax.jit(
        lambda k: langevin_sample(gaussian, MU, x0, t, key=k, step_size=0.01, steps=1500, clip=None)
    )(jax.random.key(1))
    # ULA with step h has stationary variance 1 / (1 - h / 2): 1.005 here.
    se = 1.0 / np.sqrt(n)
    np.testing.assert_allclose(samples.mean(0), MU, atol=5 * se)
    np.testing.assert_allclose(samples.var(0), 1 / (1 - 0.005), atol=10 * se)
    mode = gradient_ascent(gaussian, MU, x0[:5], t[:5], step_size=0.1, steps=300, clip=None)
    np.testing.assert_allclose(mode, jnp.broadcast_to(MU, (5, 3)), atol=1e-6)
    clipped = langevin_sample(gaussian, MU, x0[:50], t[:50], key=jax.random.key(2), steps=10)
    assert float(clipped.min()) >= 0.0 and float(clipped.max()) <= 1.0
    with pytest.raises(ValueError, match="needs key="):
        langevin_sample(gaussian, MU, x0[:5], t[:5], key=None)


def test_weight_decay_is_a_gaussian_prior(x64):
    # f = -|x - mu|^2 / 2 plus the prior -wd/2 |x - c|^2 peaks at (mu + wd c) / (1 + wd).
    x0 = jax.random.normal(jax.random.key(0), (4, 3))
    t = jnp.zeros(4, jnp.int32)
    wd, c = 0.5, 0.25
    mode = gradient_ascent(
        gaussian, MU, x0, t, step_size=0.1, steps=400, clip=None, weight_decay=wd, decay_center=c
    )
    np.testing.assert_allclose(mode, jnp.broadcast_to((MU + wd * c) / (1 + wd), (4, 3)), atol=1e-8)
    # With Langevin noise the prior shrinks the stationary variance to 1 / (1 + wd), up to
    # ULA's bias with h = 0.01: 1 / ((1 + wd) (1 - h (1 + wd) / 2)).
    n = 4000
    samples = langevin_sample(
        gaussian,
        MU,
        jnp.zeros((n, 3)),
        jnp.zeros(n, jnp.int32),
        key=jax.random.key(1),
        step_size=0.01,
        steps=1500,
        clip=None,
        weight_decay=wd,
        decay_center=c,
    )
    se = 1.0 / np.sqrt(n)
    want_var = 1 / ((1 + wd) * (1 - 0.01 * (1 + wd) / 2))
    np.testing.assert_allclose(samples.var(0), want_var, atol=10 * se * want_var)
    with pytest.raises(ValueError, match="weight_decay"):
        gradient_ascent(gaussian, MU, x0, t, weight_decay=-1.0)


def test_density_ratio_profile_matches_the_closed_form(x64):
    """f = -|x - mu|^2 / 2: E exp(f(x + eta) - f(x)) = prod_i (1 + s^2)^(-1/2)
    exp(a_i^2 s^2 / (2 (1 + s^2))), a = x - mu."""
    x = jnp.array([[0.0, 0.0, 0.0], [1.0, -1.0, 2.5]])
    t = jnp.zeros(2, jnp.int32)
    sigmas = jnp.array([0.05, 0.2, 0.5])
    prof = density_ratio_profile(
        gaussian, MU, x, t, key=jax.random.key(0), sigmas=sigmas, num_samples=20000, chunk_size=5000
    )
    a2 = jnp.sum((x - MU[None]) ** 2, axis=1)
    s2 = sigmas[:, None] ** 2
    want = (1 + s2) ** (-1.5) * jnp.exp(a2[None] * s2 / (2 * (1 + s2)))
    np.testing.assert_allclose(prof, want, rtol=0.03)


def test_gan_test_accuracy_counts_agreement():
    x = jnp.array([[0.5, -1.0, 2.0], [10.0, 10.0, 10.0]])
    np.testing.assert_array_equal(gan_test_accuracy(gaussian, MU, x, jnp.array([0, 0])), [1.0, 0.0])
