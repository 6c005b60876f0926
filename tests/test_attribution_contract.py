"""The common contract, for every attribution method: jit equals eager, 1 and 8 devices agree,
repeated calls compile once, ``[B, T]`` targets stack single-target calls, bad input is named,
and ``attribute_dataset`` covers a data set in sharded batches."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgrad import attribution as A
from jaxgrad import sharding as shd
from jaxgrad.data import eval_batches
from jaxgrad.drivers import attribute_dataset
from jaxgrad.models import MnistCNN, init_variables, linen_logit_fn

B = 8  # one example per fake device


@pytest.fixture(scope="module")
def cnn():
    model = MnistCNN()
    x = jax.random.uniform(jax.random.key(1), (B, 8, 8, 1))
    v = init_variables(model, jax.random.key(0), x[:1])
    return linen_logit_fn(model), v, x, jnp.arange(B, dtype=jnp.int32) % 10


def methods(x):
    return {
        "gradient": (A.gradient, {}),
        "gradient_x_input": (A.gradient_x_input, {}),
        "integrated_gradients": (A.integrated_gradients, dict(steps=8, chunk_size=3)),
        "smoothgrad": (A.smoothgrad, dict(num_samples=4, chunk_size=3)),
        "expected_gradients": (A.expected_gradients, dict(references=x, num_samples=4)),
        "fullgrad": (A.fullgrad, {}),
        "gradcam": (A.gradcam, dict(layer="hidden2_act")),
        "guided_backprop": (A.guided_backprop, {}),
        "blur_integrated_gradients": (A.blur_integrated_gradients, dict(steps=6, max_sigma=3.0)),
        "guided_integrated_gradients": (A.guided_integrated_gradients, dict(steps=6)),
    }


NAMES = list(methods(None))
# Guided IG takes discrete decisions (which features move) on float32 gradients, so a
# rounding-level difference between compilations can move a feature one inner iteration
# earlier: agreement to 1e-4 of the map's scale rather than 1e-6.
# Blur IG divides a difference of blurs by grad_step = 0.01, amplifying float32 rounding
# 100-fold: agreement to 1e-5 of the scale.
ATOL = {"guided_integrated_gradients": 1e-4, "blur_integrated_gradients": 1e-5}


@pytest.mark.parametrize("name", NAMES)
def test_jit_eager_devices_compile_once_and_multi_target(cnn, name):
    lf, v, x, t = cnn
    method, kw = methods(x)[name]
    key = jax.random.key(7)
    tol = ATOL.get(name, 1e-6)
    eager = method(lf, v, x, t, key=key, **kw)
    assert eager.shape == x.shape and eager.dtype == x.dtype
    assert float(jnp.abs(eager).max()) > 0

    chex.clear_trace_counter()  # counters are per code location, shared by parametrizations

    @jax.jit
    @chex.assert_max_traces(n=1)
    def run(p, xx, tt, k):
        return method(lf, p, xx, tt, key=k, **kw)

    jitted = run(v, x, t, key)
    np.testing.assert_allclose(jitted, eager, rtol=1e-4, atol=tol * float(jnp.abs(eager).max()))
    np.testing.assert_array_equal(run(v, x, t, key), jitted)  # same key, same bits
    run(v, x * 0.5, (t + 1) % 10, jax.random.key(8))  # new values, same shapes: no retrace

    mesh = shd.data_mesh()
    assert mesh.devices.size == 8
    # New input shardings: a separate jit (its own trace), same function.
    sharded = jax.jit(lambda p, xx, tt, k: method(lf, p, xx, tt, key=k, **kw))(
        shd.replicate(v, mesh),
        shd.shard_batch(x, mesh),
        shd.shard_batch(t, mesh),
        shd.replicate(key, mesh),
    )
    assert len(sharded.sharding.device_set) == 8
    np.testing.assert_allclose(sharded, jitted, rtol=1e-4, atol=tol * float(jnp.abs(eager).max()))

    two = jnp.stack([t, (t + 3) % 10], axis=1)
    multi = jax.jit(lambda p, xx, tt: method(lf, p, xx, tt, key=key, **kw))(v, x, two)
    assert multi.shape == (B, 2, *x.shape[1:])
    other = method(lf, v, x, two[:, 1], key=key, **kw)
    np.testing.assert_allclose(
        multi[:, 0], eager, rtol=1e-4, atol=tol * float(jnp.abs(eager).max())
    )
    np.testing.assert_allclose(
        multi[:, 1], other, rtol=1e-4, atol=tol * float(jnp.abs(other).max())
    )


@pytest.mark.parametrize("name", NAMES)
def test_bad_input_is_named(cnn, name):
    lf, v, x, t = cnn
    method, kw = methods(x)[name]
    key = jax.random.key(7)
    with pytest.raises(ValueError, match=r"x contains NaN .* first at index 3"):
        method(lf, v, x.at[3, 2, 2, 0].set(jnp.nan), t, key=key, **kw)
    with pytest.raises(ValueError, match=r"target must lie in \[0, 10\)"):
        method(lf, v, x, t.at[0].set(10), key=key, **kw)
    with pytest.raises(ValueError, match=r"target must lie in \[0, 10\)"):
        method(lf, v, x, jnp.stack([t, t.at[0].set(-1)], axis=1), key=key, **kw)
    with pytest.raises(ValueError, match=r"target must have shape"):
        method(lf, v, x, t[:3], key=key, **kw)


def test_step_and_sample_counts_below_one_are_named(cnn):
    lf, v, x, t = cnn
    key = jax.random.key(0)
    for method, arg in [
        (A.integrated_gradients, "steps"),
        (A.blur_integrated_gradients, "steps"),
        (A.guided_integrated_gradients, "steps"),
        (A.smoothgrad, "num_samples"),
    ]:
        with pytest.raises(ValueError, match=arg):
            method(lf, v, x, t, key=key, **{arg: 0})
    with pytest.raises(ValueError, match="baseline of shape"):
        A.guided_integrated_gradients(lf, v, x, t, baseline=jnp.zeros((3, 8, 8, 1)))
    with pytest.raises(ValueError, match="fraction"):
        A.guided_integrated_gradients(lf, v, x, t, fraction=0.0)


def test_attribute_dataset_sharded_matches_direct_calls(cnn, capsys):
    lf, v, x, _ = cnn
    images = np.asarray(jax.random.uniform(jax.random.key(3), (21, 8, 8, 1)))
    labels = np.arange(21, dtype=np.int32) % 10
    data = {"image": images, "label": labels}
    mesh = shd.data_mesh()
    batches = list(eval_batches(data, 16))  # 16 + 5 real rows, padded to 16
    ig = functools.partial(A.integrated_gradients, steps=8)
    out, used = attribute_dataset(ig, lf, v, batches, mesh=mesh, chunk_size=4)
    assert out.shape == images.shape
    np.testing.assert_array_equal(used, labels)
    direct = ig(lf, v, jnp.asarray(images), jnp.asarray(labels))
    np.testing.assert_allclose(out, direct, rtol=1e-4, atol=1e-6 * float(np.abs(direct).max()))
    assert "attribute: 2/2 (100%)" in capsys.readouterr().out
    # Predicted targets, a stochastic method with per-batch keys, no mesh.
    key = jax.random.key(5)
    sg, pred = attribute_dataset(
        A.smoothgrad,
        lf,
        v,
        batches,
        key=key,
        target_from="predicted",
        num_samples=3,
        progress=False,
    )
    np.testing.assert_array_equal(pred, np.argmax(lf(v, jnp.asarray(images)), axis=1))
    first = A.smoothgrad(
        lf,
        v,
        jnp.asarray(batches[0]["image"]),
        jnp.asarray(pred[:16]),
        key=jax.random.fold_in(key, 0),
        num_samples=3,
    )
    np.testing.assert_allclose(sg[:16], first, rtol=1e-4, atol=1e-6 * float(np.abs(first).max()))
    with pytest.raises(ValueError, match="target_from must be one of"):
        attribute_dataset(A.gradient, lf, v, batches, target_from="labels")


def test_targets_may_be_one_int_or_none_for_the_predicted_class(cnn):
    from jaxgrad.attribution import gradient, integrated_gradients
    from jaxgrad.evaluation import pixel_perturbation

    lf, v, x, t = cnn
    b = x.shape[0]
    pred = jnp.argmax(lf(v, x), axis=-1)
    np.testing.assert_array_equal(gradient(lf, v, x, None), gradient(lf, v, x, pred))
    np.testing.assert_array_equal(
        integrated_gradients(lf, v, x, 3, steps=4),
        integrated_gradients(lf, v, x, jnp.full((b,), 3), steps=4),
    )
    with pytest.raises(
        ValueError, match=r"x's first axis, the batch; a single example is x\[None\]"
    ):
        gradient(lf, v, x[0], t[:1])
    with pytest.raises(ValueError, match="target=None .* attribution methods only"):
        pixel_perturbation(lf, v, x, None, x, fractions=(0.5,))
