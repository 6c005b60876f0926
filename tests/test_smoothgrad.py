import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgrad.attribution import gradient, integrated_gradients, smoothgrad


def quadratic(params, x):
    # f_0(x) = 1/2 sum_i a_i x_i^2: gradient a * x, so under noise of std s per coordinate
    # E[g] = a x, E[g^2] = a^2 (x^2 + s^2), Var[g] = a^2 s^2.
    return 0.5 * jnp.sum(params[None] * x**2, axis=-1, keepdims=True)


@pytest.fixture
def setup(key):
    a = jnp.array([1.0, -2.0, 0.5, 3.0])
    x = jnp.array([[0.0, 1.0, 2.0, 4.0], [1.0, -1.0, 0.5, 0.0]])
    return a, x, jnp.zeros(2, jnp.int32)


def test_zero_noise_equals_the_gradient(setup, key):
    a, x, t = setup
    sg = smoothgrad(quadratic, a, x, t, key=key, noise_level=0.0, num_samples=3)
    np.testing.assert_allclose(sg, gradient(quadratic, a, x, t), rtol=1e-6)


@pytest.mark.parametrize("statistic", ["mean", "square", "variance"])
def test_statistics_match_closed_forms(statistic, setup, key):
    a, x, t = setup
    n, level = 20_000, 0.1
    span = x.max(axis=1, keepdims=True) - x.min(axis=1, keepdims=True)
    s = level * span
    sg = jax.jit(
        functools.partial(
            smoothgrad,
            quadratic,
            num_samples=n,
            noise_level=level,
            statistic=statistic,
            chunk_size=4096,
        )
    )(a, x, t, key=key)
    expected = {
        "mean": a[None] * x,
        "square": a[None] ** 2 * (x**2 + s**2),
        "variance": a[None] ** 2 * s**2,
    }[statistic]
    # Monte Carlo tolerance: a few standard errors of the sample mean of g or g^2.
    sd = {
        "mean": jnp.abs(a[None]) * s,
        "square": a[None] ** 2 * (2 * s * jnp.abs(x) + 2 * s**2),
        "variance": a[None] ** 2 * s**2 * np.sqrt(2),
    }[statistic]
    np.testing.assert_allclose(sg, expected, atol=float(jnp.max(5 * sd / np.sqrt(n))) + 1e-6)


def test_deterministic_per_key_chunking_invariant_and_wraps_ig(setup, key):
    a, x, t = setup
    one = smoothgrad(quadratic, a, x, t, key=key, num_samples=10)
    np.testing.assert_array_equal(one, smoothgrad(quadratic, a, x, t, key=key, num_samples=10))
    np.testing.assert_allclose(
        smoothgrad(quadratic, a, x, t, key=key, num_samples=10, chunk_size=3), one, rtol=1e-6
    )
    assert not np.allclose(
        one, smoothgrad(quadratic, a, x, t, key=jax.random.key(5), num_samples=10)
    )
    # IG-SmoothGrad: IG of a quadratic from zero is a x^2 / 2 for every noisy copy.
    sg_ig = smoothgrad(
        quadratic,
        a,
        x,
        t,
        key=key,
        method=integrated_gradients,
        noise_level=0.0,
        num_samples=2,
        steps=4,
    )
    np.testing.assert_allclose(sg_ig, 0.5 * a[None] * x**2, rtol=1e-5, atol=1e-6)


def test_bad_arguments_are_named(setup, key):
    a, x, t = setup
    with pytest.raises(ValueError, match="statistic"):
        smoothgrad(quadratic, a, x, t, key=key, statistic="max")
    # An option neither smoothgrad nor its method takes is named (e.g. the old aggregate=).
    with pytest.raises(TypeError, match=r"smoothgrad got \['aggregate'\].*method=gradient"):
        smoothgrad(quadratic, a, x, t, key=key, aggregate="square")
    with pytest.raises(ValueError, match="num_samples"):
        smoothgrad(quadratic, a, x, t, key=key, num_samples=0)
    with pytest.raises(ValueError, match="noise_level"):
        smoothgrad(quadratic, a, x, t, key=key, noise_level=-1.0)
