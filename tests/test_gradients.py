import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxgrad import _random
from jaxgrad.gradients import (
    hvp,
    input_gradients,
    log_density,
    score,
    select_logits,
    shift_logits,
)


def linear_logit_fn(params, x):
    return x.reshape(x.shape[0], -1) @ params["w"].T + params["b"][None]


@pytest.fixture
def linear(key):
    k1, k2, k3 = jax.random.split(key, 3)
    params = {"w": jax.random.normal(k1, (5, 12)), "b": jax.random.normal(k2, (5,))}
    x = jax.random.normal(k3, (4, 3, 4, 1))
    return params, x


def test_linear_model_gradient_is_the_weight_row(linear):
    params, x = linear
    target = jnp.array([0, 3, 4, 3])
    g = input_gradients(linear_logit_fn, params, x, target)
    assert g.shape == x.shape and g.dtype == x.dtype
    np.testing.assert_allclose(g.reshape(4, -1), params["w"][target], rtol=1e-6)


def test_gradients_of_a_nonlinear_model_match_finite_differences(key, x64):
    params = {"w": jax.random.normal(key, (3, 6), jnp.float64)}
    logit_fn = lambda p, x: jnp.tanh(x @ p["w"].T) ** 2  # noqa: E731
    x = jax.random.normal(jax.random.fold_in(key, 1), (2, 6), jnp.float64)
    target = jnp.array([2, 0])
    g = input_gradients(logit_fn, params, x, target)
    eps = 1e-6
    for b in range(2):
        for i in range(6):
            e = jnp.zeros_like(x).at[b, i].set(eps)
            fd = (
                select_logits(logit_fn(params, x + e), target)
                - select_logits(logit_fn(params, x - e), target)
            )[b] / (2 * eps)
            np.testing.assert_allclose(g[b, i], fd, rtol=1e-6, atol=1e-9)


def test_jit_equals_eager_and_select_logits(linear):
    params, x = linear
    target = jnp.array([1, 2, 3, 4])
    eager = input_gradients(linear_logit_fn, params, x, target)
    jitted = jax.jit(input_gradients, static_argnums=0)(linear_logit_fn, params, x, target)
    np.testing.assert_array_equal(eager, jitted)
    logits = linear_logit_fn(params, x)
    np.testing.assert_array_equal(select_logits(logits, target), logits[jnp.arange(4), target])


def test_bad_targets_are_named(linear):
    params, x = linear
    with pytest.raises(ValueError, match="target must have shape"):
        input_gradients(linear_logit_fn, params, x, jnp.array([0, 1]))
    with pytest.raises(ValueError, match=r"target must lie in \[0, 5\)"):
        select_logits(linear_logit_fn(params, x), jnp.array([0, 1, 2, 5]))
    with pytest.raises(TypeError, match="integer"):
        select_logits(linear_logit_fn(params, x), jnp.zeros(4))
    with pytest.raises(TypeError, match="floating"):
        input_gradients(linear_logit_fn, params, x.astype(jnp.int32), jnp.zeros(4, jnp.int32))


def test_gradients_view_of_the_density(small_cnns):
    models, x = small_cnns
    logit_fn, variables = models["softplus"]
    target = jnp.array([3, 7])
    logits = logit_fn(variables, x)
    np.testing.assert_allclose(
        log_density(logit_fn, variables, x, target), logits[jnp.arange(2), target]
    )
    np.testing.assert_allclose(
        log_density(logit_fn, variables, x), jax.nn.logsumexp(logits, -1), rtol=1e-6
    )
    np.testing.assert_array_equal(
        score(logit_fn, variables, x, target), input_gradients(logit_fn, variables, x, target)
    )
    # The marginal score is the softmax-weighted average of the class scores.
    p = jax.nn.softmax(logits)
    per_class = jnp.stack(
        [input_gradients(logit_fn, variables, x, jnp.full(2, k)) for k in range(10)], 1
    )
    np.testing.assert_allclose(
        score(logit_fn, variables, x),
        jnp.einsum("bk,bk...->b...", p, per_class),
        rtol=1e-4,
        atol=1e-7,
    )
    # hvp against jax.hessian.
    v = jax.random.normal(jax.random.key(5), x.shape)
    f = lambda z: select_logits(logit_fn(variables, z), target)  # noqa: E731
    hv = hvp(f, x, v)
    fb = lambda z: logit_fn(variables, z.reshape(1, 6, 6, 1))[0, 3]  # noqa: E731
    np.testing.assert_allclose(
        hv[0].ravel(), jax.hessian(fb)(x[0].ravel()) @ v[0].ravel(), rtol=1e-3, atol=1e-6
    )


def test_shift_keeps_softmax_and_moves_gradients(small_cnns, key):
    models, x = small_cnns
    logit_fn, variables = models["relu"]
    g = lambda p, z: 3.0 * jnp.sum(jnp.sin(z), axis=(1, 2, 3))  # noqa: E731
    shifted = shift_logits(logit_fn, g)
    np.testing.assert_allclose(
        jax.nn.softmax(shifted(variables, x)), jax.nn.softmax(logit_fn(variables, x)), atol=1e-6
    )
    target = jnp.array([1, 4])
    diff = input_gradients(shifted, variables, x, target) - input_gradients(
        logit_fn, variables, x, target
    )
    np.testing.assert_allclose(diff, 3.0 * jnp.cos(x), rtol=1e-5, atol=1e-5)
    ce = lambda lf: optax.softmax_cross_entropy_with_integer_labels(lf(variables, x), target).sum()  # noqa: E731
    np.testing.assert_allclose(
        jax.grad(lambda z: ce(lambda p, _: shifted(p, z)))(x),
        jax.grad(lambda z: ce(lambda p, _: logit_fn(p, z)))(x),
        atol=1e-5,
    )


def test_flat_draws_equal_shaped_draws(key):
    shape = (3, 5, 4, 2)
    np.testing.assert_array_equal(_random.normal(key, shape), jax.random.normal(key, shape))
    np.testing.assert_array_equal(
        _random.rademacher(key, shape), jax.random.rademacher(key, shape, jnp.float32)
    )


def test_hvp_rejects_directions_of_another_shape():
    with pytest.raises(ValueError, match="v must have"):
        hvp(lambda z: jnp.sum(z**2, axis=-1), jnp.ones((2, 3)), jnp.ones(3))


def test_an_out_of_range_target_under_jit_gives_nan_never_a_plausible_map():
    from jaxgrad.attribution import gradient, integrated_gradients

    w = jnp.arange(12.0).reshape(4, 3)
    lf = lambda p, x: x.reshape(len(x), -1) @ p  # noqa: E731
    x = jnp.ones((2, 2, 2, 1))
    for method in (gradient, integrated_gradients):
        fn = jax.jit(lambda t, m=method: m(lf, w, x, t))
        good = fn(jnp.array([0, 2]))
        assert np.isfinite(np.asarray(good)).all()
        bad = np.asarray(fn(jnp.array([0, 3])))  # class 3 of 3 logits
        assert np.isfinite(bad[0]).all() and np.isnan(bad[1]).all()
        np.testing.assert_array_equal(bad[0], np.asarray(good)[0])
    with pytest.raises(ValueError, match=r"target must lie in \[0, 3\), got values in \[0, 3\]"):
        gradient(lf, w, x, jnp.array([0, 3]))  # concrete: refused before tracing
