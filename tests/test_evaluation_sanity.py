"""Cascading and independent randomization of a params pytree, and the sanity table."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgrad.attribution import completeness_delta, gradient, integrated_gradients
from jaxgrad.drivers import sanity_table
from jaxgrad.evaluation import layer_names, randomization_stages
from jaxgrad.models import MnistCNN, init_variables, linen_logit_fn


@pytest.fixture(scope="module")
def cnn():
    model = MnistCNN()
    x = jax.random.uniform(jax.random.key(1), (6, 8, 8, 1))
    v = init_variables(model, jax.random.key(0), x[:1])
    return model, v, x


def same(a, b):
    return all(jax.tree.leaves(jax.tree.map(lambda p, q: bool(jnp.array_equal(p, q)), a, b)))


def test_layer_order_is_output_first(cnn):
    model, v, x = cnn
    assert layer_names(v) == ["softmax_linear", "fc1", "hidden2", "hidden1"]
    # After a round trip that sorts the keys, the model gives the call order back.
    shuffled = {"params": dict(sorted(v["params"].items()))}
    assert layer_names(shuffled)[0] == "softmax_linear" and layer_names(shuffled)[1] != "fc1"
    assert layer_names(shuffled, model, x[:1]) == ["softmax_linear", "fc1", "hidden2", "hidden1"]


def test_cascading_and_independent_stages(cnn):
    _, v, _ = cnn
    p = v["params"]
    casc = randomization_stages(v, key=jax.random.key(3))
    assert [s for s, _ in casc] == ["original", "softmax_linear", "fc1", "hidden2", "hidden1"]
    fc1 = casc[2][1]["params"]
    assert not same(fc1["softmax_linear"], p["softmax_linear"]) and not same(fc1["fc1"], p["fc1"])
    assert same(fc1["hidden2"], p["hidden2"]) and same(fc1["hidden1"], p["hidden1"])
    assert same(casc[0][1]["params"], p)  # the original is untouched
    indep = randomization_stages(v, key=jax.random.key(3), mode="independent")
    fc1 = indep[2][1]["params"]
    assert same(fc1["softmax_linear"], p["softmax_linear"]) and not same(fc1["fc1"], p["fc1"])
    # Truncated normal at 2 std with std 0.01: |w| <= 0.02 and std 0.01 * 0.8796.
    w = np.asarray(casc[2][1]["params"]["fc1"]["kernel"])
    assert np.abs(w).max() <= 0.02 and abs(w.std() / (0.01 * 0.87962566) - 1) < 0.02


def test_reinit_with_the_layers_own_initializers(cnn):
    model, v, x = cnn

    def reinit(k):
        return init_variables(model, k, x[:1])["params"]

    stages = randomization_stages(v, key=jax.random.key(4), layers=["fc1"], reinit=reinit)
    fresh = reinit(jax.random.fold_in(jax.random.key(4), 0))["fc1"]
    assert same(stages[1][1]["params"]["fc1"], fresh)
    with pytest.raises(
        ValueError,
        match=r"layers \['conv9'\] match no path of the params; available layers: \['softmax_linear'",
    ):
        randomization_stages(v, key=jax.random.key(4), layers=["conv9"])
    with pytest.raises(ValueError, match="mode"):
        randomization_stages(v, key=jax.random.key(4), mode="cumulative")


def test_sanity_table_reference_rows_and_ig_sums(cnn):
    model, v, x = cnn
    lf = linen_logit_fn(model)
    t = jnp.arange(6) % 10
    stages = randomization_stages(v, key=jax.random.key(5))
    methods = {
        "gradient": gradient,
        "ig": functools.partial(integrated_gradients, steps=64, chunk_size=16),
    }
    rows = sanity_table(methods, lf, stages, x, t)
    by = {(r["stage"], r["method"], r["metric"]): r for r in rows}
    assert len(rows) == len(stages) * 2 * 4
    for m in methods:
        for metric in ("spearman", "spearman_abs", "spearman_nz"):
            r = by[("original", m, metric)]
            assert r["mean"] == pytest.approx(1.0) and r["ci99_low"] == pytest.approx(1.0)
    # Each stage is attributed with its own params: IG's sum follows the logit change
    # from the black baseline (completeness, to the quadrature error of a ReLU net).
    for stage, variables in stages:
        ig = integrated_gradients(lf, variables, x, t, steps=64)
        delta = completeness_delta(lf, variables, x, t, ig)
        want = float(jnp.mean(jnp.sum(ig, axis=(1, 2, 3))))
        assert by[(stage, "ig", "attribution_sum")]["mean"] == pytest.approx(want, rel=1e-4)
        f = lf(variables, x)[jnp.arange(6), t] - lf(variables, jnp.zeros_like(x))[jnp.arange(6), t]
        assert float(jnp.max(jnp.abs(delta))) < 0.1 * float(jnp.max(jnp.abs(f))) + 1e-6
    r = by[("hidden1", "gradient", "spearman")]
    assert r["ci99_low"] <= r["mean"] <= r["ci99_high"] and r["n"] == 6
