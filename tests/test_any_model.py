"""Layer methods, traces, training and randomization on users' own models (issue 13).

One network (3x3 conv with bias -> BatchNorm in evaluation mode -> ReLU -> global average
pooling -> dense with bias) written five ways: a plain function with a ``tap`` callback, a
Linen module without jaxgrad's taps, an NNX module, an Equinox module and (for the layer
methods) the same plain function wrapped by ``shift_logits``. Every way must give the same
logits and the same Grad-CAM, FullGrad and guided-backprop maps, which are checked against
closed forms on the plain function.
"""

import functools
import warnings

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxgrad import (
    hessian_trace,
    hessian_trace_exact,
    hessian_trace_hutchinson,
    input_gradients,
    regularized_loss,
    regularized_loss_with_aux,
    shift_logits,
)
from jaxgrad.attribution import (
    FullGradWarning,
    completeness_gap,
    fullgrad,
    fullgrad_decomposition,
    gradcam,
    gradcam_layer_map,
    guided_backprop,
    integrated_gradients,
)
from jaxgrad.evaluation import leaf_paths, randomization_stages, tree_layers
from jaxgrad.models import (
    get_model,
    hooked_logit_fn,
    identity_tap,
    init_variables,
    linen_logit_fn,
    module_biases,
    nnx_logit_fn,
    nnx_train_logit_fn,
    tap_shapes,
)

EPS = 1e-5
H = W = 6
C = 4
K = 3


@pytest.fixture(scope="module")
def weights():
    r = np.random.default_rng(0)
    return {
        "kernel": r.normal(size=(3, 3, 1, C)).astype(np.float32),
        "conv_bias": r.normal(size=C).astype(np.float32) * 0.5,
        "mean": r.normal(size=C).astype(np.float32) * 0.3,
        "var": r.uniform(0.5, 2.0, size=C).astype(np.float32),
        "scale": r.uniform(0.5, 1.5, size=C).astype(np.float32),
        "beta": r.normal(size=C).astype(np.float32) * 0.5,
        "dense": r.normal(size=(C, K)).astype(np.float32),
        "dense_bias": r.normal(size=K).astype(np.float32),
    }


@pytest.fixture(scope="module")
def x():
    return jax.random.normal(jax.random.key(1), (3, H, W, 1))


def conv(x, kernel, bias):
    y = jax.lax.conv_general_dilated(
        x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    return y + bias.reshape(1, 1, 1, -1)


def plain(p, x, tap=identity_tap, activation=jax.nn.relu):
    h = tap("conv", conv(x, p["kernel"], p["conv_bias"]))
    mean, var, scale, beta = (p[k].reshape(1, 1, 1, -1) for k in ("mean", "var", "scale", "beta"))
    h = tap("bn", (h - mean) / jnp.sqrt(var + EPS) * scale + beta)
    return tap("dense", jnp.mean(activation(h), axis=(1, 2)) @ p["dense"] + p["dense_bias"][None])


def plain_biases(p):
    return {
        "conv": p["conv_bias"],
        "bn": p["beta"] - p["mean"] * p["scale"] / jnp.sqrt(p["var"] + EPS),
        "dense": p["dense_bias"],
    }


def plain_model(weights):
    p = jax.tree.map(jnp.asarray, weights)
    lf = hooked_logit_fn(
        plain,
        biases=plain_biases,
        with_activation=lambda t: functools.partial(
            plain, tap=identity_tap, activation=t(jax.nn.relu)
        ),
    )
    return lf, p


class LinenNet(nn.Module):
    """A user's Linen module: no jaxgrad taps, a ``deterministic`` flag, an activation field."""

    activation: object = nn.relu

    @nn.compact
    def __call__(self, x, deterministic=True):
        h = nn.Conv(C, (3, 3), padding="SAME", name="conv")(x)
        h = nn.BatchNorm(use_running_average=deterministic, epsilon=EPS, name="bn")(h)
        h = nn.Dropout(0.5, deterministic=deterministic)(self.activation(h))
        return nn.Dense(K, name="dense")(jnp.mean(h, axis=(1, 2)))


def linen_model(weights):
    model = LinenNet()
    variables = {
        "params": {
            "conv": {"kernel": weights["kernel"], "bias": weights["conv_bias"]},
            "bn": {"scale": weights["scale"], "bias": weights["beta"]},
            "dense": {"kernel": weights["dense"], "bias": weights["dense_bias"]},
        },
        "batch_stats": {"bn": {"mean": weights["mean"], "var": weights["var"]}},
    }
    variables = jax.tree.map(jnp.asarray, variables)
    return linen_logit_fn(model, apply_kwargs={"deterministic": True}), variables


class NnxNet(nnx.Module):
    def __init__(self, rngs):
        self.conv = nnx.Conv(1, C, (3, 3), padding="SAME", rngs=rngs)
        self.bn = nnx.BatchNorm(C, epsilon=EPS, rngs=rngs)
        self.drop = nnx.Dropout(0.5, rngs=rngs)
        self.dense = nnx.Linear(C, K, rngs=rngs)
        self.activation = nnx.relu

    def __call__(self, x):
        h = self.drop(self.activation(self.bn(self.conv(x))))
        return self.dense(jnp.mean(h, axis=(1, 2)))


def nnx_module(weights):
    m = NnxNet(nnx.Rngs(0))
    m.conv.kernel[...] = weights["kernel"]
    m.conv.bias[...] = weights["conv_bias"]
    m.bn.mean[...] = weights["mean"]
    m.bn.var[...] = weights["var"]
    m.bn.scale[...] = weights["scale"]
    m.bn.bias[...] = weights["beta"]
    m.dense.kernel[...] = weights["dense"]
    m.dense.bias[...] = weights["dense_bias"]
    return m


class EqxNet(eqx.Module):
    """Per example, ``[H, W, 1] -> [K]``; BatchNorm in evaluation mode as its affine map."""

    conv: eqx.nn.Conv2d
    shift: jax.Array
    gain: jax.Array
    dense: eqx.nn.Linear

    def __call__(self, x, tap=identity_tap):
        h = jnp.transpose(self.conv(jnp.transpose(x, (2, 0, 1))), (1, 2, 0))
        h = tap("conv", h)
        h = tap("bn", h * self.gain[None, None] + self.shift[None, None])
        return tap("dense", self.dense(jnp.mean(jax.nn.relu(h), axis=(0, 1))))


def eqx_model(weights):
    key = jax.random.key(0)
    m = EqxNet(
        conv=eqx.nn.Conv2d(1, C, 3, padding=1, key=key),
        shift=jnp.zeros(C),
        gain=jnp.ones(C),
        dense=eqx.nn.Linear(C, K, key=key),
    )
    gain = weights["scale"] / np.sqrt(weights["var"] + EPS)
    m = eqx.tree_at(
        lambda m: (m.conv.weight, m.conv.bias, m.gain, m.shift, m.dense.weight, m.dense.bias),
        m,
        (
            jnp.transpose(jnp.asarray(weights["kernel"]), (3, 2, 0, 1)),
            jnp.asarray(weights["conv_bias"])[:, None, None],
            jnp.asarray(gain),
            jnp.asarray(weights["beta"] - weights["mean"] * gain),
            jnp.asarray(weights["dense"].T),
            jnp.asarray(weights["dense_bias"]),
        ),
    )
    params, static = eqx.partition(m, eqx.is_array)

    def fn(p, xi, tap):
        return eqx.combine(p, static)(xi, tap)

    def biases(p):
        m = eqx.combine(p, static)
        return {"conv": m.conv.bias[:, 0, 0], "bn": m.shift, "dense": m.dense.bias}

    return hooked_logit_fn(fn, per_example=True, biases=biases), params


@pytest.fixture(scope="module")
def models(weights):
    nnx_lf, nnx_params = nnx_logit_fn(nnx_module(weights), activation_field="activation")
    return {
        "plain": plain_model(weights),
        "linen": linen_model(weights),
        "nnx": (nnx_lf, nnx_params),
        "equinox": eqx_model(weights),
    }


KINDS = ["plain", "linen", "nnx", "equinox"]


@pytest.mark.parametrize("kind", KINDS)
def test_logits_and_taps_agree_with_the_plain_function(models, x, kind):
    lf, p = models[kind]
    ref_lf, ref_p = models["plain"]
    np.testing.assert_allclose(lf(p, x), ref_lf(ref_p, x), rtol=1e-5, atol=1e-5)
    _, values = lf.taps(p, x, None)
    _, ref_values = ref_lf.taps(ref_p, x, None)
    for name in ("conv", "bn", "dense"):
        np.testing.assert_allclose(values[name], ref_values[name], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_gradcam_closed_form_under_global_average_pooling(models, weights, x, kind):
    # With a global average pool and a dense head, d f_y / d A_c(h, w) = W[c, y] / (H W):
    # Grad-CAM's weights are W[:, y] / (H W) exactly, and its map relu(A W[:, y]) / (H W).
    lf, p = models[kind]
    t = jnp.array([0, 2, 1])
    _, values = models["plain"][0].taps(models["plain"][1], x, None)
    a = jax.nn.relu(values["bn"])  # the layer the head reads is after the ReLU; gradcam on "bn"
    g_weights = weights["dense"][:, np.asarray(t)].T / (H * W)  # [B, C]
    # d f / d bn = 1[bn > 0] W / (HW): Grad-CAM's weights average the mask too.
    mask = (values["bn"] > 0).astype(jnp.float32)
    alpha = jnp.mean(mask, axis=(1, 2)) * g_weights
    expected = jax.nn.relu(jnp.einsum("bhwc,bc->bhw", values["bn"], alpha))
    np.testing.assert_allclose(
        gradcam_layer_map(lf, p, x, t, layer="bn"), expected, rtol=1e-4, atol=1e-6
    )
    hires = gradcam_layer_map(lf, p, x, t, layer="bn", variant="hirescam", relu=False)
    np.testing.assert_allclose(
        hires, jnp.einsum("bhwc,bc->bhw", a, g_weights), rtol=1e-4, atol=1e-6
    )
    assert gradcam(lf, p, x, t, layer="bn").shape == x.shape


@pytest.mark.parametrize("kind", KINDS)
def test_fullgrad_is_complete_without_a_warning_and_agrees_across_models(models, x, kind):
    lf, p = models[kind]
    t = jnp.array([1, 0, 2])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dec = fullgrad_decomposition(lf, p, x, t)
    assert sorted(dec.bias_gradients) == ["bn", "conv", "dense"]
    np.testing.assert_allclose(completeness_gap(dec, x, lf(p, x), t), 0.0, atol=1e-4)
    ref = fullgrad(*models["plain"], x, t)
    np.testing.assert_allclose(fullgrad(lf, p, x, t), ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["plain", "linen", "nnx"])
def test_guided_backprop_is_the_gradient_through_the_positive_head(models, weights, x, kind):
    # One ReLU: the guided rule keeps 1[h > 0] relu(d_out) with d_out = W[:, y] / (H W), so
    # guided backprop is the input-gradient of the same net with relu(W) as its head.
    lf, p = models[kind]
    t = jnp.array([2, 1, 0])
    positive = {**jax.tree.map(jnp.asarray, weights), "dense": jnp.maximum(weights["dense"], 0)}
    expected = input_gradients(plain, positive, x, t)
    np.testing.assert_allclose(guided_backprop(lf, p, x, t), expected, rtol=1e-4, atol=1e-6)
    assert float(jnp.abs(expected - input_gradients(lf, p, x, t)).max()) > 1e-3


def test_the_nnx_module_is_left_as_the_user_had_it(weights, x):
    module = nnx_module(weights)
    before = nnx.state(module, nnx.Param, nnx.BatchStat)
    lf, p = nnx_logit_fn(module, activation_field="activation")
    gradcam(lf, p, x, 0, layer="bn")
    guided_backprop(lf, p, x, 0)
    assert type(module.conv) is nnx.Conv and module.activation is nnx.relu
    assert not module.drop.deterministic  # still in training mode
    jax.tree.map(np.testing.assert_array_equal, nnx.state(module, nnx.Param, nnx.BatchStat), before)


def test_wrappers_explain_the_function_given_or_are_refused_by_name(models, x):
    lf, p = models["nnx"]
    g = shift_logits(lf, lambda params, z: jnp.sum(jnp.sin(z), axis=(1, 2, 3)))
    np.testing.assert_allclose(  # the shift reads no layer: the layer gradients stay
        gradcam_layer_map(g, p, x, 1, layer="bn"), gradcam_layer_map(lf, p, x, 1, layer="bn")
    )
    with pytest.raises(ValueError, match="fullgrad needs logit_fn.biases"):
        fullgrad(g, p, x, 1)

    def normalised(params, z):  # a plain wrapper hides the taps: refused, not skipped
        return lf(params, (z - 0.5) / 0.25)

    with pytest.raises(TypeError, match="gradcam needs the model's internals"):
        gradcam(normalised, p, x, 1, layer="bn")
    with pytest.raises(ValueError, match=r"layer 'conv1' is not a tap.*'bn', 'conv'"):
        gradcam(lf, p, x, 1, layer="conv1")


def test_a_bias_declared_without_its_tap_is_named_in_a_warning(weights, x):
    _, p = plain_model(weights)

    def no_conv_tap(params, z, tap=identity_tap):
        return plain(params, z, lambda name, v: v if name == "conv" else tap(name, v))

    lf = hooked_logit_fn(no_conv_tap, biases=plain_biases)
    with pytest.warns(FullGradWarning) as record:
        dec = fullgrad_decomposition(lf, p, x, jnp.array([0, 1, 2]))
    messages = [str(w.message) for w in record]
    assert any("biases of ['conv'] are added to no tap" in m for m in messages)
    assert any("misses up to" in m and "['bn', 'dense']" in m for m in messages)
    gap = completeness_gap(dec, x, lf(p, x), jnp.array([0, 1, 2]))
    assert float(jnp.abs(gap).max()) > 1e-3


def test_integrated_gradients_is_complete_on_every_model(models, x):
    for kind in KINDS:
        lf, p = models[kind]
        ig = integrated_gradients(lf, p, x, None, steps=256)
        pred = jnp.argmax(lf(p, x), axis=-1)
        gap = lf(p, x)[jnp.arange(3), pred] - lf(p, jnp.zeros_like(x))[jnp.arange(3), pred]
        np.testing.assert_allclose(jnp.sum(ig, axis=(1, 2, 3)), gap, rtol=2e-2, atol=2e-3)


def smooth(p, z):
    h = jax.nn.softplus(z.reshape(z.shape[0], -1) @ p["w1"])
    return h @ p["w2"]


def test_hessian_trace_in_the_common_form_matches_jax_hessian():
    r = np.random.default_rng(3)
    p = {
        "w1": jnp.asarray(r.normal(size=(6, 5)), jnp.float32),
        "w2": jnp.asarray(r.normal(size=(5, 3)), jnp.float32),
    }
    x = jnp.asarray(r.normal(size=(4, 2, 3)), jnp.float32)
    t = jnp.array([0, 2, 1, 2])
    brute = [
        jnp.trace(jax.hessian(lambda z, b=b: smooth(p, z[None])[0, t[b]])(x[b]).reshape(6, 6))
        for b in range(4)
    ]
    np.testing.assert_allclose(hessian_trace(smooth, p, x, t), brute, rtol=1e-4, atol=1e-5)
    hutch = functools.partial(hessian_trace_hutchinson, num_probes=4096)
    est = hessian_trace(smooth, p, x, t, trace_estimator=hutch, key=jax.random.key(0))
    np.testing.assert_allclose(est, brute, atol=0.1 * float(np.max(np.abs(brute))))
    np.testing.assert_allclose(
        hessian_trace(smooth, p, x, 1, trace_estimator=hessian_trace_exact),
        hessian_trace(smooth, p, x, jnp.ones(4, jnp.int32)),
    )


def test_nnx_train_step_with_batchnorm_dropout_and_score_matching(weights):
    # The train-mode recipe: split once, merge inside a pure loss, return the updated state.
    model = nnx_module(weights)
    train_logit_fn, params, state = nnx_train_logit_fn(model)
    tx = optax.adam(1e-2)
    opt_state = tx.init(params)
    x = jax.random.normal(jax.random.key(5), (8, H, W, 1))
    y = jnp.arange(8) % K

    @jax.jit
    def step(params, state, opt_state, key):
        def loss_fn(params):
            loss, aux = regularized_loss_with_aux(
                lambda p, z: train_logit_fn(p, state, z),
                params,
                x,
                y,
                kind="score_matching",
                key=key,
                lam=1e-3,
            )
            return jnp.mean(loss), aux

        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), aux.model_aux, opt_state, loss, aux

    losses = []
    for i in range(6):
        params, state, opt_state, loss, aux = step(params, state, opt_state, jax.random.key(i))
        losses.append(float(loss))
    assert losses[-1] < losses[0] and np.isfinite(losses).all()
    eval_lf, eval_params = nnx_logit_fn(model)
    train_logits, _ = train_logit_fn(eval_params, state, x)  # Dropout on in training mode
    assert not np.allclose(train_logits, eval_lf(eval_params, x), atol=1e-3)
    assert aux.logits.shape == (8, K) and aux.regularizer.shape == (8,)
    nnx.update(model, params, state)  # back into the user's module
    assert not np.allclose(model.bn.mean[...], weights["mean"])  # running mean moved
    lf, p = nnx_logit_fn(model)
    assert lf(p, x).shape == (8, K)


def test_linen_train_step_keeps_batch_stats_through_the_aux(weights):
    model = LinenNet()
    _, variables = linen_model(weights)
    x = jax.random.normal(jax.random.key(6), (8, H, W, 1))
    y = jnp.arange(8) % K

    def train_logits(p, z, key):
        return model.apply(
            {"params": p, "batch_stats": variables["batch_stats"]},
            z,
            deterministic=False,
            mutable=["batch_stats"],
            rngs={"dropout": key},
        )

    def loss(p):
        fn = functools.partial(train_logits, key=jax.random.key(0))
        per_example, aux = regularized_loss_with_aux(
            lambda q, z: fn(q, z), p, x, y, kind="gradient_norm", lam=1e-2
        )
        return jnp.mean(per_example), aux

    (value, aux), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(variables["params"])
    assert np.isfinite(float(value))
    assert jax.tree.structure(grads) == jax.tree.structure(variables["params"])
    stats = aux.model_aux["batch_stats"]["bn"]["mean"]
    assert not np.allclose(stats, variables["batch_stats"]["bn"]["mean"])
    # kind="none" is the cross-entropy, and regularized_loss is the same loss without aux.
    lf = linen_logit_fn(model, apply_kwargs={"deterministic": True})
    none, aux = regularized_loss_with_aux(
        lambda q, z: (lf(q, z), None), variables, x, y, kind="none"
    )
    np.testing.assert_allclose(none, regularized_loss(lf, variables, x, y, kind="none"))
    np.testing.assert_allclose(aux.regularizer, 0.0)


def test_randomization_stages_on_any_params_pytree(models, weights):
    key = jax.random.key(7)
    # NNX state: paths are attribute paths, the Variable's "value" is dropped.
    _, nnx_params = models["nnx"]
    assert "dense/kernel" in leaf_paths(nnx_params)
    stages = randomization_stages(nnx_params, key=key, layers=["dense", "conv"])
    assert [s[0] for s in stages] == ["original", "dense", "conv"]
    dense = stages[1][1]
    assert not np.allclose(dense["dense"]["kernel"][...], nnx_params["dense"]["kernel"][...])
    np.testing.assert_array_equal(dense["conv"]["kernel"][...], nnx_params["conv"]["kernel"][...])
    assert float(jnp.std(stages[2][1]["conv"]["kernel"][...])) < 0.02  # cascading, std 0.01
    # A plain dict: one leaf per layer here.
    _, p = models["plain"]
    stages = randomization_stages(p, key=key, layers=["dense_bias"], mode="independent")
    assert np.abs(np.asarray(stages[1][1]["dense_bias"])).max() <= 0.02
    np.testing.assert_array_equal(stages[1][1]["kernel"], p["kernel"])
    # Equinox: the arrays of eqx.partition, layers by attribute path, output first by default.
    mlp = eqx.nn.MLP(4, 3, 8, 2, key=jax.random.key(0))
    arrays, static = eqx.partition(mlp, eqx.is_array)
    assert tree_layers(arrays) == ["layers/2", "layers/1", "layers/0"]
    with pytest.raises(ValueError, match=r"needs layers=.*\['layers/2', 'layers/1', 'layers/0'\]"):
        randomization_stages(arrays, key=key)
    stages = randomization_stages(arrays, key=key, layers=tree_layers(arrays))
    randomized = eqx.combine(stages[1][1], static)
    assert not np.allclose(randomized.layers[2].weight, mlp.layers[2].weight)
    np.testing.assert_array_equal(randomized.layers[0].weight, mlp.layers[0].weight)
    assert randomized(jnp.ones(4)).shape == (3,)
    with pytest.raises(ValueError, match=r"match no path.*available layers: \['layers/2'"):
        randomization_stages(arrays, key=key, layers=["layers/7"])


class Sown(nn.Module):
    """A user's Linen module that keeps a value with Flax's own ``sow`` (no perturbation slot)."""

    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Conv(C, (3, 3), name="conv")(x))
        self.sow("intermediates", "features", h)
        return nn.Dense(K, name="head")(h.reshape(len(h), -1))


class Scanned(nn.Module):
    """Three dense layers under nn.scan: their values live in the scan's own trace."""

    @nn.compact
    def __call__(self, x):
        class Cell(nn.Module):
            @nn.compact
            def __call__(self, h, _):
                return nn.relu(nn.Dense(h.shape[-1], name="fc")(h)), None

        h = nn.Dense(6, name="inp")(x.reshape(len(x), -1))
        stack = nn.scan(Cell, variable_axes={"params": 0}, split_rngs={"params": True}, length=3)
        h, _ = stack(name="stack")(h, None)
        return nn.Dense(K, name="head")(h)


class Shared(nn.Module):
    """One biased block called twice (weight sharing), defined in setup()."""

    def setup(self):
        self.inp = nn.Dense(5)
        self.block = nn.Dense(5)
        self.head = nn.DenseGeneral((K,))

    def __call__(self, x):
        h = nn.relu(self.inp(x.reshape(len(x), -1)))
        h = nn.relu(self.block(h))
        return self.head(nn.relu(self.block(h)))


class Multi(nn.Module):
    """A DenseGeneral whose bias has two axes, then a flatten and a head."""

    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.DenseGeneral((2, 3), name="proj")(x.reshape(len(x), -1)))
        return nn.Dense(K, name="head")(h.reshape(len(h), -1))


def test_linen_edge_cases_sow_scan_shared_layers_and_matrix_biases(x):
    # A plain self.sow value is not a tap (its gradient could not be taken): refused by name.
    m = Sown()
    v = m.init(jax.random.key(0), x)
    lf = linen_logit_fn(m)
    assert "features" not in tap_shapes(lf, v, x) and "conv" in tap_shapes(lf, v, x)
    with pytest.raises(ValueError, match="layer 'features' is not a tap"):
        gradcam(lf, v, x, 0, layer="features")
    # nn.scan: the layers inside the scan are not taps; the rest of the model works.
    m = Scanned()
    v = m.init(jax.random.key(0), x)
    lf = linen_logit_fn(m)
    assert sorted(tap_shapes(lf, v, x)) == ["head", "inp"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FullGradWarning)  # the scanned biases are not taps
        dec = fullgrad_decomposition(lf, v, x, jnp.array([0, 1, 2]))
    assert sorted(dec.bias_gradients) == ["head", "inp"]
    # A block called twice carries its bias twice; the decomposition counts both calls.
    m = Shared()
    v = m.init(jax.random.key(1), x)
    v = jax.tree.map(lambda a: a + 0.3, v)  # non-zero biases
    lf = linen_logit_fn(m)
    assert {"block", "block#2"} <= set(tap_shapes(lf, v, x))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dec = fullgrad_decomposition(lf, v, x, jnp.array([2, 0, 1]))
    assert {"block", "block#2", "head", "inp"} == set(dec.bias_gradients)
    np.testing.assert_allclose(
        completeness_gap(dec, x, lf(v, x), jnp.array([2, 0, 1])), 0, atol=1e-4
    )
    # A bias with two axes (DenseGeneral, attention projections) is broadcast, not flattened.
    m = Multi()
    v = jax.tree.map(lambda a: a + 0.2, m.init(jax.random.key(2), x))
    lf = linen_logit_fn(m)
    assert module_biases(v)["proj"].shape == (2, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dec = fullgrad_decomposition(lf, v, x, jnp.array([0, 1, 2]))
    assert dec.bias_gradients["proj"].shape == (3, 2, 3)


class Flagged(nn.Module):
    """A user's module whose evaluation flag is ``deterministic`` (default: training)."""

    @nn.compact
    def __call__(self, x, deterministic: bool = False):
        h = nn.Dropout(0.5, deterministic=deterministic)(
            nn.relu(nn.Dense(8)(x.reshape(len(x), -1)))
        )
        return nn.Dense(K)(h)


def test_linen_evaluation_flag_is_found_and_jit_matches_eager(x):
    m = Flagged()
    v = m.init(jax.random.key(0), x)
    lf = linen_logit_fn(m)  # deterministic=True found by name: no dropout RNG needed
    np.testing.assert_allclose(lf(v, x), m.apply(v, x, deterministic=True), rtol=1e-6)
    lf_nnx, p = nnx_logit_fn(nnx_module_for_jit())
    eager = gradcam_layer_map(lf_nnx, p, x, 1, layer="bn")
    jitted = jax.jit(gradcam_layer_map, static_argnums=0, static_argnames="layer")(
        lf_nnx, p, x, 1, layer="bn"
    )
    np.testing.assert_allclose(jitted, eager, rtol=1e-5, atol=1e-7)


def nnx_module_for_jit():
    r = np.random.default_rng(4)
    w = {
        "kernel": r.normal(size=(3, 3, 1, C)),
        "conv_bias": r.normal(size=C),
        "mean": r.normal(size=C),
        "var": r.uniform(0.5, 2, size=C),
        "scale": r.uniform(0.5, 1.5, size=C),
        "beta": r.normal(size=C),
        "dense": r.normal(size=(C, K)),
        "dense_bias": r.normal(size=K),
    }
    return nnx_module({k: np.asarray(a, np.float32) for k, a in w.items()})


def test_nnx_logit_fn_is_a_snapshot_the_users_later_edits_do_not_reach(weights, x):
    module = nnx_module(weights)
    lf, p = nnx_logit_fn(module)
    before = lf(p, x)
    module.bn.mean[...] = module.bn.mean[...] + 1.0  # the user keeps training / editing
    module.conv.kernel[...] = 2.0 * module.conv.kernel[...]
    np.testing.assert_array_equal(lf(p, x), before)
    np.testing.assert_array_equal(p["conv"]["kernel"][...], weights["kernel"])


def test_nnx_taps_from_several_threads_keep_their_own_hooks(models, x):
    import threading

    lf, p = models["nnx"]
    results, errors = {}, []

    def work(i):
        try:
            results[i] = sorted(lf.taps(p, x, None)[1])
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert all(r == ["bn", "conv", "dense", "drop"] for r in results.values())


def test_fullgrad_is_quiet_on_a_bfloat16_network():
    model = get_model("resnet18", num_classes=K, widths=(4, 8, 8, 8), dtype="bfloat16")
    x = jax.random.uniform(jax.random.key(0), (2, 8, 8, 3))
    v = init_variables(model, jax.random.key(1), x[:1])
    with warnings.catch_warnings():
        warnings.simplefilter("error", FullGradWarning)
        fullgrad_decomposition(linen_logit_fn(model), v, x, jnp.array([0, 1]))
