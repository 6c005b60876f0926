"""Hessian-trace estimators against closed forms, jax.hessian and each other."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgrad import sharding as shd
from jaxgrad.gradients import (
    select_logits,
)
from jaxgrad.score_matching import (
    regularized_loss,
    score_matching_loss,
)
from jaxgrad.trace_estimators import (
    hessian_trace_exact,
    hessian_trace_hutchinson,
    hessian_trace_taylor,
)


def test_exact_trace_of_a_gaussian(gaussian, key, x64):
    f, precision, _ = gaussian(key)
    x = jax.random.normal(jax.random.fold_in(key, 1), (5, 6), jnp.float64)
    expected = -jnp.trace(precision)
    for chunk in (None, 1, 4):
        np.testing.assert_allclose(hessian_trace_exact(f, x, chunk_size=chunk), expected, atol=1e-5)
    # Image-shaped inputs: [B, H, W, C] flattened inside f.
    fi = lambda z: f(z.reshape(z.shape[0], -1))  # noqa: E731
    np.testing.assert_allclose(
        hessian_trace_exact(fi, x.reshape(5, 1, 3, 2), chunk_size=4), expected, atol=1e-5
    )


@pytest.mark.parametrize("distribution", ["rademacher", "gaussian"])
@pytest.mark.parametrize("product", ["jvp", "vjp"])
def test_hutchinson_mean_and_variance_match_closed_forms(gaussian, distribution, product, key, x64):
    f, precision, _ = gaussian(key)
    h = -precision
    n = 10_000
    x = jnp.broadcast_to(jax.random.normal(jax.random.fold_in(key, 1), (1, 6), jnp.float64), (n, 6))
    # One probe per row: n independent single-probe estimates.
    est = hessian_trace_hutchinson(
        f,
        x,
        key=jax.random.fold_in(key, 2),
        num_probes=1,
        distribution=distribution,
        product=product,
    )
    mean, var = float(jnp.mean(est)), float(jnp.var(est, ddof=1))
    assert abs(mean - float(jnp.trace(h))) < 3 * np.sqrt(var / n)
    fro2 = float(jnp.sum(h**2))
    expected_var = (
        2 * (fro2 - float(jnp.sum(jnp.diag(h) ** 2))) if distribution == "rademacher" else 2 * fro2
    )
    np.testing.assert_allclose(var, expected_var, rtol=0.10)
    # Averaging probes divides the variance.
    est16 = hessian_trace_hutchinson(
        f,
        x[:2000],
        key=key,
        num_probes=16,
        distribution=distribution,
        product=product,
        chunk_size=5,
    )
    np.testing.assert_allclose(float(jnp.var(est16, ddof=1)), expected_var / 16, rtol=0.15)


def test_rademacher_hutchinson_is_exact_for_a_diagonal_hessian(key, x64):
    f = lambda x: -0.5 * jnp.sum(jnp.array([[1.0, 2.0, 3.0]]) * x**2, axis=-1)  # noqa: E731
    est = hessian_trace_hutchinson(f, jnp.ones((4, 3)), key=key, num_probes=3)
    np.testing.assert_allclose(est, -6.0, rtol=1e-12)


def test_taylor_variance_and_antithetic_variance(gaussian, key, x64):
    f, precision, mean = gaussian(key)
    h = -precision
    n = 20_000
    x0 = jax.random.normal(jax.random.fold_in(key, 1), (1, 6), jnp.float64)
    g = -(x0[0] - mean) @ precision
    x = jnp.broadcast_to(x0, (n, 6))
    fro2 = float(jnp.sum(h**2))
    for sigma in (0.1, 0.5):
        est = hessian_trace_taylor(f, x, key=jax.random.fold_in(key, 3), sigma=sigma)
        var = float(jnp.var(est, ddof=1))
        np.testing.assert_allclose(var, 4 * float(g @ g) / sigma**2 + 2 * fro2, rtol=0.15)
        assert abs(float(jnp.mean(est)) - float(jnp.trace(h))) < 3 * np.sqrt(
            var / n
        )  # unbiased: quadratic
    anti = hessian_trace_taylor(f, x, key=key, sigma=0.1, antithetic=True)
    np.testing.assert_allclose(float(jnp.var(anti, ddof=1)), 2 * fro2, rtol=0.15)


def test_taylor_bias_shrinks_with_sigma(key, x64):
    # f(x) = sum exp(a x_i): E exp(a (x + sigma z)) = exp(a x + a^2 sigma^2 / 2), so the
    # estimator's expectation is trace(H) * 2 (exp(a^2 sigma^2 / 2) - 1) / (a^2 sigma^2).
    a = 1.5
    f = lambda x: jnp.sum(jnp.exp(a * x), axis=-1)  # noqa: E731
    x0 = jnp.array([[0.2, -0.4, 0.1]])
    trace = float(jnp.sum(a**2 * jnp.exp(a * x0)))
    np.testing.assert_allclose(hessian_trace_exact(f, x0), trace, rtol=1e-12)
    n = 200_000
    x = jnp.broadcast_to(x0, (n, 3))
    biases = []
    for sigma in (0.8, 0.4, 0.2):
        expectation = trace * 2 * np.expm1(a**2 * sigma**2 / 2) / (a**2 * sigma**2)
        est = hessian_trace_taylor(
            f, x, key=jax.random.fold_in(key, int(sigma * 10)), sigma=sigma, antithetic=True
        )
        se = float(jnp.std(est)) / np.sqrt(n)
        assert abs(float(jnp.mean(est)) - expectation) < 3 * se + 1e-9
        biases.append(expectation - trace)
    assert biases[0] > biases[1] > biases[2] > 0
    np.testing.assert_allclose(biases[1] / biases[2], 4.0, rtol=0.05)  # O(sigma^2)


def test_exact_trace_equals_jax_hessian_on_cnns(small_cnns):
    models, x = small_cnns
    target = jnp.array([3, 7])
    for act, (logit_fn, variables) in models.items():
        f = lambda z, lf=logit_fn, v=variables: select_logits(lf(v, z), target)  # noqa: E731
        exact = jax.jit(functools.partial(hessian_trace_exact, f, chunk_size=12))(x)
        for b in range(2):
            fb = lambda z, b=b, lf=logit_fn, v=variables: lf(v, z.reshape(1, 6, 6, 1))[0, target[b]]  # noqa: E731
            ref = jnp.trace(jax.hessian(fb)(x[b].ravel()))
            np.testing.assert_allclose(exact[b], ref, rtol=1e-4, atol=1e-6)
        if act == "relu":
            assert jnp.all(exact == 0.0)
        else:
            assert jnp.all(jnp.abs(exact) > 1e-4)


def test_estimators_agree_with_each_other_on_a_smooth_model(smooth_mlp, key):
    (logit_fn, variables), x = smooth_mlp
    n = 512
    xs = jnp.repeat(x, n, axis=0)  # n independent single-probe estimates per image
    target = jnp.repeat(jnp.array([3, 7]), n)
    f = lambda z: select_logits(logit_fn(variables, z), target)  # noqa: E731
    exact = hessian_trace_exact(
        lambda z: select_logits(logit_fn(variables, z), jnp.array([3, 7])), x
    )
    estimates = {
        "hutchinson": hessian_trace_hutchinson(
            f, xs, key=key, distribution="gaussian", chunk_size=1
        ),
        "taylor_antithetic": hessian_trace_taylor(f, xs, key=key, sigma=0.05, antithetic=True),
    }
    for name, est in estimates.items():
        est = est.reshape(2, n)
        se = jnp.std(est, axis=1) / np.sqrt(n)
        assert jnp.all(jnp.abs(est.mean(1) - exact) < 4 * se), (name, est.mean(1), exact, se)


def test_taylor_sees_the_kinks_that_autodiff_hessians_ignore(small_cnns, key):
    # Max-pooling is piecewise: jax.hessian differentiates inside the current piece, while
    # f(x + v) - f(x) crosses the kinks, whose contribution grows like 1 / sigma.
    models, x = small_cnns
    logit_fn, variables = models["softplus"]
    n = 512
    f = lambda z: select_logits(logit_fn(variables, z), jnp.repeat(jnp.array([3, 7]), n))  # noqa: E731
    exact = hessian_trace_exact(
        lambda z: select_logits(logit_fn(variables, z), jnp.array([3, 7])), x
    )
    devs = []
    for sigma in (0.05, 0.01):
        est = jax.jit(
            lambda z, s=sigma: hessian_trace_taylor(f, z, key=key, sigma=s, antithetic=True)
        )(jnp.repeat(x, n, axis=0)).reshape(2, n)
        devs.append(
            float(jnp.max(jnp.abs(est.mean(1) - exact) / (jnp.std(est, axis=1) / np.sqrt(n))))
        )
    assert devs[1] > devs[0] > 3  # many standard errors away, and further as sigma shrinks


def test_jit_vmap_grad_and_determinism(taylor_rounding, smooth_mlp, key):
    (logit_fn, variables), x = smooth_mlp
    target = jnp.array([3, 7])
    f = lambda z: select_logits(logit_fn(variables, z), target)  # noqa: E731
    for fn in (
        functools.partial(hessian_trace_exact, f, chunk_size=9),
        functools.partial(hessian_trace_hutchinson, f, key=key, num_probes=3, chunk_size=2),
        functools.partial(hessian_trace_taylor, f, key=key, sigma=0.01, num_samples=3),
        functools.partial(
            score_matching_loss,
            f,
            key=key,
            trace_estimator=functools.partial(hessian_trace_taylor, num_samples=2),
        ),
    ):
        eager = fn(x)
        assert eager.shape == (2,)
        np.testing.assert_allclose(
            jax.jit(fn)(x), eager, rtol=1e-5, atol=taylor_rounding(f, x, 0.01)
        )
        np.testing.assert_array_equal(fn(x), eager)  # same key, same result
    # vmap over a leading axis of x (each slice a batch of 1).
    per = jax.vmap(
        lambda z: hessian_trace_exact(
            lambda y: select_logits(logit_fn(variables, y), target[:1]), z[None]
        )
    )(x)
    np.testing.assert_allclose(per[0, 0], hessian_trace_exact(f, x)[0], rtol=1e-5)
    # grad with respect to params of every regularized loss (double backprop) is finite.
    for kind in ("score_matching", "anti_score_matching", "gradient_norm", "none"):
        g = jax.jit(
            jax.grad(
                lambda p, k=kind: jnp.mean(
                    regularized_loss(logit_fn, p, x, target, kind=k, key=key)
                )
            )
        )(variables)
        assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(g))


def test_one_and_eight_devices_agree(taylor_rounding, smooth_mlp, key):
    (logit_fn, variables), x = smooth_mlp
    xb = jnp.tile(x, (4, 1, 1, 1))  # batch 8
    target = jnp.arange(8) % 10
    f = lambda z: select_logits(logit_fn(variables, z), target)  # noqa: E731
    mesh = shd.data_mesh()
    xs = shd.shard_batch(xb, mesh)
    for fn in (
        functools.partial(hessian_trace_exact, f, chunk_size=12),
        functools.partial(hessian_trace_taylor, f, key=key, sigma=0.01, num_samples=2),
        functools.partial(hessian_trace_hutchinson, f, key=key, num_probes=2),
    ):
        one = jax.jit(fn)(xb)
        eight = jax.jit(fn)(xs)
        np.testing.assert_allclose(eight, one, rtol=1e-5, atol=taylor_rounding(f, xb, 0.01))


def test_bad_arguments_are_named(key):
    f = lambda x: jnp.sum(x**2, axis=-1)  # noqa: E731
    x = jnp.ones((2, 3))
    with pytest.raises(ValueError, match="num_probes"):
        hessian_trace_hutchinson(f, x, key=key, num_probes=0)
    with pytest.raises(ValueError, match="distribution"):
        hessian_trace_hutchinson(f, x, key=key, distribution="uniform")
    with pytest.raises(ValueError, match="product must be one of"):
        hessian_trace_hutchinson(f, x, key=key, product="fwd")
    with pytest.raises(ValueError, match="sigma"):
        hessian_trace_taylor(f, x, key=key, sigma=0.0)
    with pytest.raises(ValueError, match="chunk_size"):
        hessian_trace_exact(f, x, chunk_size=0)
    with pytest.raises(TypeError, match="key"):
        hessian_trace_taylor(f, x)
    for estimator in (hessian_trace_taylor, hessian_trace_hutchinson):
        with pytest.raises(ValueError, match="is stochastic: pass key="):
            estimator(f, x, key=None)
    with pytest.raises(ValueError, match="rank|batch axis"):
        hessian_trace_exact(f, jnp.ones(3))
