"""Blur IG and Guided IG against PAIR saliency's core (the ``bench`` extra), same model.

PAIR's ``call_model_function`` is fed by the same JAX model, so the two implementations see
identical gradients; in float64 (PAIR's own precision) they agree to rounding.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgrad.attribution import blur_integrated_gradients, guided_integrated_gradients
from jaxgrad.attribution.blur_ig import gaussian_blur
from jaxgrad.models import MnistCNN, init_variables, linen_logit_fn

saliency = pytest.importorskip("saliency.core", reason="the bench extra is installed by make test")
ndimage = pytest.importorskip("scipy.ndimage")


@pytest.fixture
def setup(x64):
    model = MnistCNN(activation="softplus")
    x = jax.random.uniform(jax.random.key(1), (3, 10, 8, 1), jnp.float64)
    v = init_variables(model, jax.random.key(0), x[:1].astype(jnp.float32))
    v = jax.tree.map(lambda a: a.astype(jnp.float64), v)
    lf = linen_logit_fn(model)
    t = jnp.array([2, 5, 7])
    grad = jax.jit(jax.grad(lambda xx, tt: jnp.sum(lf(v, xx)[jnp.arange(len(tt)), tt])))

    v32 = jax.tree.map(lambda a: a.astype(jnp.float32), v)
    grad32 = jax.jit(jax.grad(lambda xx, tt: jnp.sum(lf(v32, xx)[jnp.arange(len(tt)), tt])))

    def call_model(index, dtype=jnp.float64):
        g_fn = grad if dtype == jnp.float64 else grad32

        def fn(x_batch, call_model_args=None, expected_keys=None):
            xb = jnp.asarray(x_batch, dtype)
            g = g_fn(xb, jnp.full((len(xb),), t[index]))
            return {saliency.INPUT_OUTPUT_GRADIENTS: np.asarray(g)}

        return fn

    return lf, v, x, t, call_model


@pytest.mark.parametrize("sigma", [0.0, 0.3, 1.7, 6.0])
def test_blur_matches_scipy_gaussian_filter(sigma, x64):
    img = np.random.default_rng(0).random((2, 9, 7, 3))
    ours = gaussian_blur(jnp.asarray(img), jnp.asarray(sigma), max_radius=30)
    for b in range(2):
        theirs = saliency.blur_ig.gaussian_blur(img[b], sigma) if sigma else img[b]
        np.testing.assert_allclose(ours[b], theirs, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("sqrt", [False, True])
def test_blur_ig_matches_pair(setup, sqrt):
    lf, v, x, t, call_model = setup
    kw = dict(max_sigma=10.0, steps=16, grad_step=0.01, sqrt=sqrt)
    ours = blur_integrated_gradients(lf, v, x, t, chunk_size=5, **kw)
    v32 = jax.tree.map(lambda a: a.astype(jnp.float32), v)
    ours32 = blur_integrated_gradients(lf, v32, x.astype(jnp.float32), t, **kw)
    for b in range(len(x)):
        theirs = saliency.BlurIG().GetMask(np.asarray(x[b]), call_model(b), batch_size=1, **kw)
        scale = np.abs(theirs).max()
        np.testing.assert_allclose(ours[b], theirs, rtol=1e-7, atol=1e-9 * scale)
        # float32 on both sides: the forward difference in sigma (step 0.01) amplifies
        # rounding, so each float32 result is ~3e-3 (of the max) from float64, alike.
        x32 = np.asarray(x[b], np.float32)
        theirs32 = saliency.BlurIG().GetMask(x32, call_model(b, jnp.float32), batch_size=1, **kw)
        np.testing.assert_allclose(ours32[b], theirs32, atol=2e-4 * scale)


@pytest.fixture
def pair_quantile(monkeypatch):
    """PAIR saliency 0.2.1 calls ``np.quantile(..., interpolation=)``, removed in NumPy 2.4."""
    import saliency.core.guided_ig as gig

    quantile = np.quantile

    def compat(a, q, interpolation="linear", **kw):
        return quantile(a, q, method=interpolation, **kw)

    monkeypatch.setattr(gig.np, "quantile", compat)


@pytest.mark.parametrize("fraction, max_dist", [(0.25, 0.02), (0.1, 1.0), (0.5, 0.0)])
def test_guided_ig_matches_pair(setup, pair_quantile, fraction, max_dist):
    lf, v, x, t, call_model = setup
    base = 0.1 * jnp.ones_like(x).at[:, 3:6].set(0.9)  # equal coordinates exercise the NaN rule
    kw = dict(fraction=fraction, max_dist=max_dist)
    ours = guided_integrated_gradients(lf, v, x, t, baseline=base, steps=25, **kw)
    for b in range(len(x)):
        theirs = saliency.GuidedIG().GetMask(
            np.asarray(x[b]), call_model(b), x_baseline=np.asarray(base[b]), x_steps=25, **kw
        )
        np.testing.assert_allclose(ours[b], theirs, rtol=1e-7, atol=1e-9 * np.abs(theirs).max())


def test_guided_ig_of_a_linear_model_is_exact():
    """Any monotone path from b to x gives (x - b) * w for f = w . x: the path ends at x."""
    w = jax.random.normal(jax.random.key(0), (2, 20))
    lf = lambda p, z: z @ p.T  # noqa: E731
    x = jax.random.normal(jax.random.key(1), (4, 20))
    t = jnp.array([0, 1, 1, 0])
    for max_dist in (0.0, 0.02, 1.0):
        ours = guided_integrated_gradients(lf, w, x, t, steps=30, max_dist=max_dist)
        np.testing.assert_allclose(ours, x * w[t], rtol=1e-4, atol=1e-5)
