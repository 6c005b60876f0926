"""``fast_logit_fn``: a user's stock-layer model rewritten into jaxgrad's fast forms, with the
same values and derivatives (first and second order, ties in max-pooling included)."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxgrad import input_gradients
from jaxgrad.attribution import integrated_gradients, smoothgrad
from jaxgrad.models import fast_logit_fn, nnx_logit_fn, tiled_max_pool


class StockCNN(nn.Module):
    """Stock Flax layers: nn.Conv, nn.max_pool (reduce_window), nn.Dense."""

    @nn.compact
    def __call__(self, x):
        for width in (4, 6):
            x = nn.max_pool(nn.relu(nn.Conv(width, (3, 3))(x)), (2, 2), strides=(2, 2))
        return nn.Dense(3)(x.reshape(x.shape[0], -1))


class NnxCNN(nnx.Module):
    def __init__(self, rngs):
        self.conv = nnx.Conv(1, 4, (3, 3), padding="SAME", rngs=rngs)
        self.dense = nnx.Linear(4 * 4 * 4, 3, rngs=rngs)

    def __call__(self, x):
        h = nnx.max_pool(nnx.softplus(self.conv(x)), (2, 2), strides=(2, 2))
        return self.dense(h.reshape(h.shape[0], -1))


@jax.jit
def plain_logits(p, x):
    """A plain jitted function: NCHW, a strided and dilated conv, a grouped conv, a padded
    (not tiling) max-pool and a 3x3 tiling one on odd sizes."""
    h = jax.lax.conv_general_dilated(
        x, p["w1"], (2, 1), "SAME", rhs_dilation=(1, 2), dimension_numbers=("NCHW", "OIHW", "NCHW")
    )
    h = jnp.tanh(h)
    h = jax.lax.conv_general_dilated(
        h,
        p["w2"],
        (1, 1),
        "VALID",
        feature_group_count=2,
        dimension_numbers=("NCHW", "OIHW", "NCHW"),
    )
    padded = jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 1, 2, 2), (1, 1, 1, 1), "SAME")
    tiled = jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 1, 3, 3), (1, 1, 3, 3), "VALID")
    return jnp.einsum("bchw,kc->bk", padded, p["d1"]) + jnp.einsum("bchw,kc->bk", tiled, p["d2"])


def tied_logits(p, x):
    """Max-pooling straight on quantised images scaled by a parameter: most windows tie among
    values of nonzero slope, so the choice between tied inputs shows in every derivative."""
    h = jax.lax.reduce_window(
        x * p["s"] + p["b"], -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID"
    )
    h = jnp.tanh(h)  # curvature, so that second derivatives are not all zero
    return h.reshape(h.shape[0], -1) @ p["d"]


def _images(shape, seed=0):
    """Images with flat regions (quantised values): max-pool windows with tied maxima."""
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.integers(0, 3, shape) / 2.0, jnp.float32)


@pytest.fixture(scope="module")
def cases():
    x_nhwc = _images((3, 10, 10, 1))
    linen = StockCNN()
    v_linen = linen.init(jax.random.key(0), x_nhwc)
    nnx_fn, nnx_params = nnx_logit_fn(NnxCNN(nnx.Rngs(0)))
    rng = np.random.default_rng(1)
    p_plain = {
        "w1": jnp.asarray(rng.normal(size=(4, 2, 3, 3)), jnp.float32),
        "w2": jnp.asarray(rng.normal(size=(4, 2, 2, 2)), jnp.float32),
        "d1": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32),
        "d2": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32),
    }
    p_tied = {
        "s": jnp.asarray(rng.normal(size=(1, 1, 1, 2)), jnp.float32),
        "b": jnp.asarray(rng.normal(size=(1, 1, 1, 2)), jnp.float32),
        "d": jnp.asarray(rng.normal(size=(4 * 4 * 2, 3)), jnp.float32),
    }
    return {
        "ties": (tied_logits, p_tied, _images((3, 8, 8, 2), 4)),
        "linen": (linen.apply, v_linen, x_nhwc),
        "nnx": (nnx_fn, nnx_params, _images((3, 8, 8, 1), 2)),
        "plain": (plain_logits, p_plain, _images((3, 2, 13, 14), 3)),
    }


KINDS = ("ties", "linen", "nnx", "plain")


def _close(a, b):
    a, b = np.asarray(a), np.asarray(b)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * max(1.0, np.abs(b).max()))


@pytest.mark.parametrize("kind", KINDS)
def test_values_and_first_derivatives_are_the_original_s(cases, kind):
    f, v, x = cases[kind]
    g = fast_logit_fn(f)
    y = jnp.arange(len(x)) % 3
    _close(jax.jit(g)(v, x), jax.jit(f)(v, x))
    _close(input_gradients(g, v, x, y), input_gradients(f, v, x, y))

    def loss(fn, params):
        return jnp.sum(jax.nn.log_softmax(fn(params, x))[jnp.arange(len(x)), y])

    jax.tree.map(
        _close, jax.grad(functools.partial(loss, g))(v), jax.grad(functools.partial(loss, f))(v)
    )


@pytest.mark.parametrize("kind", KINDS)
def test_second_derivatives_are_the_original_s(cases, kind):
    # Hessian-vector products in x (score matching's double backprop) and the mixed
    # derivative in the parameters of the input-gradient's norm (gradient-norm regularizer).
    f, v, x = cases[kind]
    g = fast_logit_fn(f)
    y = jnp.arange(len(x)) % 3
    t = jax.random.normal(jax.random.key(5), x.shape)

    def hvp(fn):
        grad = jax.grad(lambda z: jnp.sum(fn(v, z)[jnp.arange(len(x)), y]))
        return jax.jvp(grad, (x,), (t,))[1]

    _close(hvp(g), hvp(f))

    def grad_norm(fn, params):
        return jnp.sum(input_gradients(fn, params, x, y) ** 2)

    jax.tree.map(
        _close,
        jax.grad(functools.partial(grad_norm, g))(v),
        jax.grad(functools.partial(grad_norm, f))(v),
    )


def test_tied_maxima_get_the_gradient_jax_s_rule_gives_them():
    # All-equal windows: JAX's reduce_window_max rule sends a window's gradient to its first
    # input; jnp.max on a reshape would split it in four. tiled_max_pool follows JAX.
    x = jnp.ones((1, 4, 4, 1))

    def pool(z):
        return jax.lax.reduce_window(z, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")

    want = jax.grad(lambda z: jnp.sum(pool(z)))(x)
    got = jax.grad(lambda z: jnp.sum(tiled_max_pool(z, (1, 2, 2, 1))))(x)
    np.testing.assert_array_equal(got, want)
    assert float(want[0, 0, 0, 0]) == 1.0 and float(want.sum()) == 4.0


def test_the_gradient_program_has_no_select_and_scatter_and_canonical_kernels(cases):
    # What makes it fast: max-pooling's backward is no longer select-and-scatter, and the
    # input-gradient convolutions take a kernel transposed in memory ([0, 1, i, o]) rather
    # than one whose feature axes are swapped in the dimension numbers ([0, 1, o, i]).
    f, v, x = cases["linen"]
    y = jnp.zeros(len(x), jnp.int32)

    def hlo(fn):
        grad = jax.jit(lambda v, x: input_gradients(fn, v, x, y))
        return grad.lower(v, x).as_text()

    slow, fast = hlo(f), hlo(fast_logit_fn(f))
    assert "select_and_scatter" in slow and "x[0, 1, o, i]" in slow
    assert "select_and_scatter" not in fast and "reduce_window" not in fast
    assert "x[0, 1, o, i]" not in fast and "x[0, 1, i, o]" in fast


def test_it_composes_with_jit_vmap_and_closures(cases):
    f, v, x = cases["ties"]
    g = fast_logit_fn(f)

    # A closed-over tracer: differentiating in a scale the traced function closes over.
    def scaled(wrap, s):
        return jnp.sum(wrap(lambda p, z: f(p, z * s))(v, x) ** 2)

    want = jax.grad(functools.partial(scaled, lambda fn: fn))(1.5)
    _close(jax.grad(functools.partial(scaled, fast_logit_fn))(1.5), want)
    _close(jax.jit(jax.grad(functools.partial(scaled, fast_logit_fn)))(1.5), want)
    # vmap over a leading axis of several batches, and forward mode along a random direction
    # (so that the choice between tied inputs shows).
    xs = jnp.stack([x, x[::-1]])
    _close(jax.vmap(g, (None, 0))(v, xs), jax.vmap(f, (None, 0))(v, xs))
    t = jax.random.normal(jax.random.key(1), x.shape)
    _close(jax.jvp(lambda z: g(v, z), (x,), (t,))[1], jax.jvp(lambda z: f(v, z), (x,), (t,))[1])


@pytest.mark.parametrize(
    "shape, window", [((2, 7, 9, 4), (1, 2, 3, 2)), ((3, 5, 6, 2, 4), (2, 1, 3, 1, 2))]
)
def test_tiled_max_pool_follows_reduce_window_on_any_tiling_window(shape, window):
    # Windows over three axes, some of size 1 between them, sizes that leave a remainder, and
    # quantised values (ties everywhere): values, gradients and second derivatives agree.
    x = _images(shape, 7) - 0.5
    w = jax.random.normal(
        jax.random.key(2), tuple(d // k for d, k in zip(shape, window, strict=True))
    )

    def pool(z):
        return jax.lax.reduce_window(z, -jnp.inf, jax.lax.max, window, window, "VALID")

    def loss(p, z):
        return jnp.sum(jnp.tanh(p(z)) * w)

    def fast(z):
        return tiled_max_pool(z, window)

    np.testing.assert_array_equal(fast(x), pool(x))
    np.testing.assert_array_equal(
        jax.grad(functools.partial(loss, fast))(x), jax.grad(functools.partial(loss, pool))(x)
    )
    t = jax.random.normal(jax.random.key(3), shape)

    def hvp(p):
        return jax.jvp(jax.grad(functools.partial(loss, p)), (x,), (t,))[1]

    _close(hvp(fast), hvp(pool))


def test_infinite_inputs_keep_the_original_values_and_gradients():
    # -inf padding (masked pooling) must not turn into NaN through the rewrite.
    x = jnp.asarray([[1.0, -jnp.inf, -jnp.inf, -jnp.inf], [2.0, 3.0, -jnp.inf, 0.5]])

    def pool(z):
        return jax.lax.reduce_window(z, -jnp.inf, jax.lax.max, (1, 2), (1, 2), "VALID")

    def fast(z):
        return tiled_max_pool(z, (1, 2))

    np.testing.assert_array_equal(fast(x), pool(x))
    assert np.isneginf(np.asarray(fast(x))[0, 1])
    w = jnp.asarray([[1.0, 0.0], [2.0, 3.0]])
    want = jax.grad(lambda z: jnp.sum(jnp.where(w > 0, pool(z), 0.0) * w))(x)
    got = jax.grad(lambda z: jnp.sum(jnp.where(w > 0, fast(z), 0.0) * w))(x)
    np.testing.assert_array_equal(got, want)


def test_attribution_methods_take_it_unchanged(cases):
    f, v, x = cases["linen"]
    g = fast_logit_fn(f)
    y = jnp.arange(len(x)) % 3
    ig = functools.partial(integrated_gradients, steps=16, chunk_size=4)
    _close(jax.jit(functools.partial(ig, g))(v, x, y), jax.jit(functools.partial(ig, f))(v, x, y))
    key = jax.random.key(0)
    sg = functools.partial(smoothgrad, key=key, num_samples=8, noise_level=0.1, chunk_size=4)
    _close(sg(g, v, x, y), sg(f, v, x, y))


def test_bad_input_is_named():
    with pytest.raises(TypeError, match="logit_fn must be callable"):
        fast_logit_fn("not a function")
    with pytest.raises(ValueError, match="window must have one size per axis"):
        tiled_max_pool(jnp.ones((2, 4, 4, 1)), (2, 2))
    with pytest.raises(ValueError, match="window sizes must be positive integers"):
        tiled_max_pool(jnp.ones((2, 4, 4, 1)), (1, 0, 2, 1))
    with pytest.raises(ValueError, match="window sizes must be positive integers"):
        tiled_max_pool(jnp.ones((2, 4, 4, 1)), (1, True, 2, 1))
    with pytest.raises(ValueError, match="window must be static"):
        jax.jit(tiled_max_pool)(jnp.ones((2, 4, 4, 1)), (1, 2, 2, 1))
    # Any integer type, and array-likes, are taken.
    got = tiled_max_pool([[1.0, 2.0], [3.0, 4.0]], (np.int64(2), 2))
    np.testing.assert_array_equal(got, [[4.0]])
