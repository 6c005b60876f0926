import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgrad.attribution import (
    completeness_delta,
    gradient,
    gradient_x_input,
    integrated_gradients,
    quadrature,
)
from jaxgrad.models import MnistCNN, init_variables, linen_logit_fn


def linear(params, x):
    return x.reshape(x.shape[0], -1) @ params.T


@pytest.fixture
def lin(key):
    w = jax.random.normal(key, (5, 12))
    x = jax.random.normal(jax.random.fold_in(key, 1), (4, 3, 4, 1))
    return w, x, jnp.array([0, 3, 4, 3])


def test_linear_gradient_is_the_weight_row_and_signed(lin):
    w, x, t = lin
    g = gradient(linear, w, x, t)
    np.testing.assert_allclose(g.reshape(4, -1), w[t], rtol=1e-6)
    assert (g < 0).any()  # signed by default
    np.testing.assert_allclose(gradient(linear, w, x, t, postprocess="abs"), jnp.abs(g))
    np.testing.assert_allclose(gradient(linear, w, x, t, postprocess="square"), g**2)
    np.testing.assert_allclose(gradient_x_input(linear, w, x, t), x * g, rtol=1e-6)


def separable(params, x):
    # f_0 = 5 x0 + x1^2 + sin(x2); f_1 = x0 x1 (not separable; unused as target here)
    f0 = 5 * x[:, 0] + x[:, 1] ** 2 + jnp.sin(x[:, 2])
    return jnp.stack([f0, x[:, 0] * x[:, 1]], axis=1) * params


@pytest.mark.parametrize(
    "rule, steps, atol",
    [
        ("gauss_legendre", 16, 1e-5),
        ("trapezoid", 2000, 1e-4),
        ("middle", 1000, 1e-4),
        ("left", 4000, 2e-3),
        ("right", 4000, 2e-3),
    ],
)
def test_ig_matches_the_analytic_integral_per_coordinate(rule, steps, atol, x64):
    x = jnp.array([[1.0, 2.0, 3.0]])
    base = jnp.array([0.5, 1.0, 1.0])
    ig = jax.jit(functools.partial(integrated_gradients, separable, steps=steps, rule=rule))
    attr = ig(jnp.float64(1.0), x, jnp.array([0]), baseline=base)
    expected = jnp.array([[5 * (1 - 0.5), 2**2 - 1**2, jnp.sin(3.0) - jnp.sin(1.0)]])
    np.testing.assert_allclose(attr, expected, atol=atol)


def test_gauss_legendre_is_exact_for_polynomials(x64):
    f = lambda p, x: (p[None] * x**3).sum(-1, keepdims=True)  # noqa: E731
    x = jnp.array([[1.5, -2.0, 0.3]])
    attr = integrated_gradients(f, jnp.array([1.0, 2.0, -1.0]), x, jnp.array([0]), steps=2)
    np.testing.assert_allclose(attr, jnp.array([[1.0, 2.0, -1.0]]) * x**3, rtol=1e-12)
    a, w = quadrature("trapezoid", 3)
    np.testing.assert_allclose(a, [0, 0.5, 1])
    np.testing.assert_allclose(w, [0.25, 0.5, 0.25])


@pytest.fixture(scope="module")
def mnist_cnn():
    model = MnistCNN(activation="softplus", beta=5.0)
    x = jax.random.uniform(jax.random.key(7), (4, 28, 28, 1))
    variables = jax.jit(init_variables, static_argnums=0)(model, jax.random.key(1), x[:1])
    return linen_logit_fn(model), variables, x


def test_ig_completeness_on_the_mnist_cnn(mnist_cnn):
    logit_fn, variables, x = mnist_cnn
    target = jnp.array([0, 3, 5, 9])
    ig = jax.jit(functools.partial(integrated_gradients, logit_fn, steps=256, chunk_size=64))
    attr = ig(variables, x, target)
    delta = jax.jit(completeness_delta, static_argnums=0)(logit_fn, variables, x, target, attr)
    f_x = logit_fn(variables, x)[jnp.arange(4), target]
    f_b = logit_fn(variables, jnp.zeros_like(x))[jnp.arange(4), target]
    assert attr.shape == x.shape
    assert jnp.all(jnp.abs(delta) < 1e-3 * jnp.abs(f_x - f_b)), (delta, f_x - f_b)
    np.testing.assert_allclose(attr.sum(axis=(1, 2, 3)) - delta, f_x - f_b, rtol=1e-5, atol=1e-5)


def test_chunking_and_jit_do_not_change_ig_and_compile_once(lin):
    w, x, t = lin
    f = lambda p, z: jnp.tanh(linear(p, z))  # noqa: E731
    full = integrated_gradients(f, w, x, t, steps=7)
    for chunk in (1, 3, 7, 100):
        np.testing.assert_allclose(
            integrated_gradients(f, w, x, t, steps=7, chunk_size=chunk), full, rtol=1e-5, atol=1e-7
        )

    @jax.jit
    @chex.assert_max_traces(n=1)
    def ig(p, z, tt):
        return integrated_gradients(f, p, z, tt, steps=7, chunk_size=3)

    np.testing.assert_allclose(ig(w, x, t), full, rtol=1e-5, atol=1e-7)
    ig(w * 2, x + 1, t)  # same shapes: no new trace


def test_baselines_constant_array_and_sampled(lin, key):
    w, x, t = lin
    f = lambda p, z: jnp.tanh(linear(p, z))  # noqa: E731
    const = integrated_gradients(f, w, x, t, baseline=0.5, steps=8)
    arr = integrated_gradients(f, w, x, t, baseline=jnp.full((3, 4, 1), 0.5), steps=8)
    np.testing.assert_allclose(const, arr, rtol=1e-6)
    # A sampled baseline averages IG over draws; one fixed draw reproduces the manual IG.
    draws = jax.vmap(lambda k: jax.random.normal(k, x.shape))(jax.random.split(key, 3))
    sample = lambda k, z: jax.random.normal(k, z.shape)  # noqa: E731
    kw = dict(key=key, baseline=sample, num_baselines=3)
    sampled = integrated_gradients(f, w, x, t, steps=8, **kw)
    manual = jnp.mean(
        jnp.stack([integrated_gradients(f, w, x, t, baseline=b, steps=8) for b in draws]), 0
    )
    np.testing.assert_allclose(sampled, manual, rtol=1e-5, atol=1e-6)
    # The same key gives the same draws: the delta averages f(x) - f(x') over them.
    delta = completeness_delta(f, w, x, t, sampled, **kw)
    gap = jnp.mean(
        jax.vmap(lambda b: f(w, x)[jnp.arange(4), t] - f(w, b)[jnp.arange(4), t])(draws), 0
    )
    np.testing.assert_allclose(delta, jnp.sum(sampled, axis=(1, 2, 3)) - gap, rtol=1e-5, atol=1e-6)


def test_bad_input_is_named(lin):
    w, x, t = lin
    with pytest.raises(ValueError, match=r"target must lie in \[0, 5\)"):
        integrated_gradients(linear, w, x, jnp.array([0, 1, 2, 5]))
    with pytest.raises(TypeError, match="baseline must be None, a number, an array or a function"):
        integrated_gradients(linear, w, x, t, baseline="blur")
    with pytest.raises(ValueError, match="num_baselines must be a positive integer"):
        integrated_gradients(
            linear, w, x, t, key=jax.random.key(0), baseline=lambda k, z: z, num_baselines=0
        )
    with pytest.raises(ValueError, match="baseline of shape"):
        integrated_gradients(linear, w, x, t, baseline=jnp.zeros((2, 2)))
    with pytest.raises(ValueError, match="steps"):
        integrated_gradients(linear, w, x, t, steps=0)
    with pytest.raises(ValueError, match="rule"):
        integrated_gradients(linear, w, x, t, rule="simpson")
    with pytest.raises(ValueError, match="NaN or infinite values in 1 example.*index 2"):
        gradient(linear, w, x.at[2, 0, 0, 0].set(jnp.nan), t)
    with pytest.raises(ValueError, match="key"):
        integrated_gradients(linear, w, x, t, baseline=lambda k, z: z)
    with pytest.raises(ValueError, match="postprocess"):
        gradient(linear, w, x, t, postprocess="relu")


def test_completeness_delta_of_multi_target_attributions(lin):
    w, x, t = lin
    f = lambda p, z: jnp.tanh(linear(p, z))  # noqa: E731
    two = jnp.stack([t, (t + 1) % 5], axis=1)
    ig = integrated_gradients(f, w, x, two, steps=16)
    delta = completeness_delta(f, w, x, two, ig)
    assert delta.shape == two.shape
    for j in range(2):
        np.testing.assert_array_equal(delta[:, j], completeness_delta(f, w, x, two[:, j], ig[:, j]))
    with pytest.raises(ValueError, match=r"attribution must have shape \[B, T, \*S\]"):
        completeness_delta(f, w, x, two, ig[:, 0])
