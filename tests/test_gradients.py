import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgrad.gradients import input_gradients, select_logits


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
