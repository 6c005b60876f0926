"""FullGrad, Grad-CAM / HiResCAM, guided backprop and Expected Gradients against closed forms."""

import zlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgrad._filters import resize_bilinear
from jaxgrad.attribution import (
    FullGradWarning,
    completeness_gap,
    expected_gradients,
    fullgrad,
    fullgrad_decomposition,
    gradcam,
    gradcam_layer_map,
    guided,
    guided_backprop,
)
from jaxgrad.gradients import shift_logits, shift_to_target_map
from jaxgrad.models import (
    MLP,
    MnistCNN,
    ResNet,
    init_variables,
    linen_logit_fn,
    module_biases,
    tap,
)


def total(decomposition, x):
    gx, bias_grads = decomposition
    out = jnp.sum(gx * x, axis=tuple(range(1, x.ndim)))
    for b in bias_grads.values():
        out = out + jnp.sum(b, axis=tuple(range(1, b.ndim)))
    return out


@pytest.fixture(scope="module")
def bn_resnet():
    """A small ReLU ResNet in evaluation mode with non-trivial BatchNorm statistics."""
    model = ResNet(stage_sizes=(1, 1), widths=(4, 8))
    x = jax.random.uniform(jax.random.key(1), (3, 8, 8, 3))
    with jax.threefry_partitionable(False):  # 6x faster to compile on XLA CPU
        v = jax.jit(init_variables, static_argnums=0)(model, jax.random.key(0), x[:1])

    def perturb(path, a):
        # crc32, not hash(): Python salts str hashes per process, which made this draw random.
        k = jax.random.fold_in(jax.random.key(5), zlib.crc32(jax.tree_util.keystr(path).encode()))
        if path[-1].key == "mean":
            return a + 0.3 * jax.random.normal(k, a.shape)
        return a + jax.random.uniform(k, a.shape, minval=0.1, maxval=1.0)

    v["batch_stats"] = jax.tree_util.tree_map_with_path(perturb, v["batch_stats"])
    leaves, tdef = jax.tree.flatten(v["params"])
    keys = jax.random.split(jax.random.key(6), len(leaves))
    v["params"] = tdef.unflatten(
        [a + 0.2 * jax.random.normal(k, a.shape) for a, k in zip(leaves, keys, strict=True)]
    )
    return model, v, x


def test_fullgrad_decomposition_sums_to_the_logit_relu_batchnorm(bn_resnet):
    model, v, x = bn_resnet
    lf = linen_logit_fn(model)
    t = jnp.array([1, 3, 7])
    dec = fullgrad_decomposition(lf, v, x, t)
    # Every BatchNorm and the dense head carry a bias; the bias-free convolutions do not.
    assert "layer2_block1/shortcut_bn" in dec[1] and "logits" in dec[1]
    assert not any("conv" in k for k in dec[1])
    f = lf(v, x)[jnp.arange(3), t]
    np.testing.assert_allclose(total(dec, x), f, rtol=1e-4)
    # Without the BatchNorm effective biases the sum would be off: they matter here.
    bn_part = sum(jnp.sum(b, axis=(1, 2, 3)) for k, b in dec[1].items() if "bn" in k)
    assert jnp.min(jnp.abs(bn_part)) > 1e-2 * jnp.max(jnp.abs(f))


def test_effective_bias_of_batchnorm_is_beta_minus_scaled_mean(bn_resnet):
    _, v, _ = bn_resnet
    b = module_biases(v, bn_epsilon=1e-5)["stem_bn"]
    p, s = v["params"]["stem_bn"], v["batch_stats"]["stem_bn"]
    np.testing.assert_allclose(
        b, p["bias"] - s["mean"] * p["scale"] / np.sqrt(s["var"] + 1e-5), rtol=1e-6
    )


def test_fullgrad_decomposition_on_the_mnist_cnn_and_saliency_range():
    model = MnistCNN()
    x = jax.random.uniform(jax.random.key(1), (2, 8, 8, 1))
    v = init_variables(model, jax.random.key(0), x[:1])
    lf = linen_logit_fn(model)
    t = jnp.array([4, 9])
    np.testing.assert_allclose(
        total(fullgrad_decomposition(lf, v, x, t), x), lf(v, x)[jnp.arange(2), t], rtol=1e-4
    )
    s = fullgrad(lf, v, x, t)
    assert s.shape == x.shape and (s >= 0).all()
    # psi rescales each part to [0, 1], then channels are summed: input (1) + 32 + 64.
    assert float(s.max()) <= 1 + 32 + 64
    # The multi-target form stacks single-target calls.
    both = fullgrad(lf, v, x, jnp.array([[4, 0], [9, 1]]))
    np.testing.assert_allclose(both[:, 0], s, rtol=1e-6)


def test_resize_matches_closed_forms():
    m = jnp.arange(4.0).reshape(1, 2, 2, 1)
    up = resize_bilinear(m, (3, 3), align_corners=True)[0, ..., 0]
    np.testing.assert_allclose(up, [[0, 0.5, 1], [1, 1.5, 2], [2, 2.5, 3]])
    up = resize_bilinear(m, (4, 4), align_corners=False)
    np.testing.assert_allclose(up, jax.image.resize(m, (1, 4, 4, 1), "bilinear"), atol=1e-6)


class RegionReader(nn.Module):
    """A conv layer whose channel c sees only region c; the logit reads channel 0 (region 0)."""

    @nn.compact
    def __call__(self, x, train=False):
        del train
        h = nn.Conv(2, (3, 3), padding="SAME", name="conv")(x)
        mask = jnp.zeros((8, 8, 2)).at[:4, :4, 0].set(1.0).at[4:, :, 1].set(1.0)
        a = tap(self, "feat", nn.relu(h) * mask[None])
        read = jnp.sum(a[:, :4, :4, 0], axis=(1, 2))
        other = jnp.sum(a[..., 1], axis=(1, 2))
        return jnp.stack([read, other], axis=1)


def test_gradcam_is_zero_outside_the_region_the_logit_reads():
    model = RegionReader()
    x = jax.random.uniform(jax.random.key(1), (3, 8, 8, 1))
    v = init_variables(model, jax.random.key(0), x[:1])
    v["params"]["conv"]["bias"] = jnp.array([0.5, 0.5])  # positive: active everywhere
    v["params"]["conv"]["kernel"] = jnp.abs(v["params"]["conv"]["kernel"])
    lf = linen_logit_fn(model)
    t = jnp.zeros(3, jnp.int32)
    for variant in ("gradcam", "hirescam"):
        cam = gradcam_layer_map(lf, v, x, t, layer="feat", variant=variant)
        assert float(jnp.abs(cam[:, :4, :4]).min()) > 0
        outside = cam.at[:, :4, :4].set(0.0)
        assert float(jnp.abs(outside).max()) == 0.0
    full = gradcam(lf, v, x, t, layer="feat")
    assert full.shape == x.shape


def test_gradcam_closed_form_and_hirescam_support():
    """f = sum_c w_c * sum_{R} A_c: Grad-CAM = relu(sum_c (w_c |R| / hw) A_c) everywhere."""
    w = jnp.array([1.0, -2.0, 0.5])

    class Reader(nn.Module):
        @nn.compact
        def __call__(self, x, train=False):
            a = tap(self, "feat", x * jnp.arange(1.0, 4.0)[None, None, None])
            return jnp.einsum("bhwc,c->b", a[:, 1:3, 2:5], w)[:, None]

    model = Reader()
    x = jax.random.uniform(jax.random.key(3), (2, 6, 6, 3))
    v = init_variables(model, jax.random.key(0), x[:1])
    lf = linen_logit_fn(model)
    t = jnp.zeros(2, jnp.int32)
    a = x * jnp.arange(1.0, 4.0)[None, None, None]
    expected = jax.nn.relu(jnp.einsum("bhwc,c->bhw", a, w * 6 / 36))
    cam = gradcam_layer_map(lf, v, x, t, layer="feat")
    np.testing.assert_allclose(cam, expected, rtol=1e-5)
    hires = gradcam_layer_map(lf, v, x, t, layer="feat", variant="hirescam", relu=False)
    expected = (
        jnp.zeros((2, 6, 6)).at[:, 1:3, 2:5].set(jnp.einsum("bhwc,c->bhw", a, w)[:, 1:3, 2:5])
    )
    np.testing.assert_allclose(hires, expected, rtol=1e-5)


def test_gradcam_rejects_unknown_layers_and_non_spatial_layers():
    model = MnistCNN()
    x = jnp.ones((1, 8, 8, 1))
    v = init_variables(model, jax.random.key(0), x)
    lf = linen_logit_fn(model)
    with pytest.raises(ValueError, match="layer 'conv9' is not a tap.*hidden2_act"):
        gradcam(lf, v, x, jnp.array([0]), layer="conv9")
    with pytest.raises(ValueError, match="layer 'fc1_act' must be spatial"):
        gradcam(lf, v, x, jnp.array([0]), layer="fc1_act")
    # A plain logit function declares no internals: refused by name, never guessed.
    for method, kw in ((gradcam, dict(layer="hidden2_act")), (fullgrad, {}), (guided_backprop, {})):
        with pytest.raises(TypeError, match=f"{method.__name__} needs the model's internals"):
            method(lambda p, x: lf(p, x), v, x, jnp.array([0]), **kw)


def test_guided_backprop_of_a_linear_relu_net_by_hand():
    """f = w2[:, t] . relu(W1^T x + b1) + b2: guided grad = W1 (1[z > 0] * relu(w2[:, t]))."""
    model = MLP(hidden=(6,), num_classes=3)
    x = jax.random.normal(jax.random.key(1), (4, 5))
    v = init_variables(model, jax.random.key(0), x[:1])
    v["params"]["hidden1"]["bias"] = jax.random.normal(jax.random.key(2), (6,))
    lf = linen_logit_fn(model)
    t = jnp.array([0, 1, 2, 1])
    w1, b1 = v["params"]["hidden1"]["kernel"], v["params"]["hidden1"]["bias"]
    w2 = v["params"]["logits"]["kernel"]
    z = x @ w1 + b1[None]
    expected = ((z > 0) * jax.nn.relu(w2[:, t].T)) @ w1.T
    ours = guided_backprop(lf, v, x, t)
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-7)
    # It differs from the plain gradient wherever a negative weight is dropped.
    plain = ((z > 0) * w2[:, t].T) @ w1.T
    assert float(jnp.abs(ours - plain).max()) > 1e-3
    # The forward pass is untouched.
    g = guided(jax.nn.relu)
    np.testing.assert_array_equal(g(z), jax.nn.relu(z))


def test_expected_gradients_closed_form_and_completeness(x64):
    """f = sum c_i x_i^2 with one reference r: E_a[EG_i] = c_i (x_i^2 - r_i^2)."""
    c = jnp.array([1.0, -2.0, 0.5, 3.0])

    def lf(p, x):
        return jnp.sum(p[None] * x**2, axis=1, keepdims=True)

    x = jnp.array([[1.0, 2.0, -1.0, 0.5], [0.0, -1.0, 2.0, 1.0]])
    t = jnp.zeros(2, jnp.int32)
    r = jnp.array([[0.5, -1.0, 1.0, 2.0]])
    n = 20000
    eg = expected_gradients(lf, c, x, t, key=jax.random.key(0), references=r, num_samples=n)
    # Per sample: 2 c (x - r)(r + a (x - r)), a ~ U(0,1): SE = 2|c||x-r|^2 sqrt(1/12 / n).
    se = 2 * jnp.abs(c)[None] * (x - r) ** 2 * np.sqrt(1 / 12 / n)
    assert jnp.all(jnp.abs(eg - c[None] * (x**2 - r**2)) <= 5 * se + 1e-12)
    # Several references: completeness holds in expectation, f(x) - mean f(refs).
    refs = jax.random.normal(jax.random.key(1), (7, 4))
    eg = expected_gradients(lf, c, x, t, key=jax.random.key(2), references=refs, num_samples=n)
    gap = jnp.sum(eg, axis=1) - (lf(c, x)[:, 0] - jnp.mean(lf(c, refs)[:, 0]))
    assert float(jnp.abs(gap).max()) < 0.1 * float(jnp.abs(lf(c, x)).max())
    # Deterministic per key and chunking-invariant.
    a = expected_gradients(lf, c, x, t, key=jax.random.key(3), references=refs, num_samples=10)
    b = expected_gradients(
        lf, c, x, t, key=jax.random.key(3), references=refs, num_samples=10, chunk_size=3
    )
    np.testing.assert_allclose(a, b, rtol=1e-10)
    with pytest.raises(ValueError, match="references must have shape"):
        expected_gradients(lf, c, x, t, key=jax.random.key(3), references=refs[:, :3])
    with pytest.raises(ValueError, match="num_samples"):
        expected_gradients(lf, c, x, t, key=jax.random.key(3), references=refs, num_samples=0)


def test_layer_methods_explain_the_shifted_model_not_the_original():
    """shift_to_target_map(lf, c, m) makes f~_c(x) = <m, x>: no layer reads it."""
    model = MnistCNN(features=(4, 8), dense=16)
    x = jax.random.uniform(jax.random.key(1), (3, 8, 8, 1))
    v = init_variables(model, jax.random.key(0), x[:1])
    lf = linen_logit_fn(model)
    m = jax.random.normal(jax.random.key(2), (8, 8, 1))
    shifted = shift_to_target_map(lf, 3, m)
    c, k = jnp.full(3, 3), jnp.array([0, 5, 9])
    # Grad-CAM / HiResCAM of class c: f~_c does not depend on any layer, so the map is 0,
    # while the original model's is not.
    for variant in ("gradcam", "hirescam"):
        kw = dict(layer="hidden2_act", variant=variant, relu=False)
        assert float(jnp.abs(gradcam_layer_map(shifted, v, x, c, **kw)).max()) == 0.0
        assert float(jnp.abs(gradcam_layer_map(lf, v, x, c, **kw)).max()) > 0.0
    # HiResCAM is linear in the logit: class k of the shifted model is f_k - f_c.
    kw = dict(layer="hidden2_act", variant="hirescam", relu=False)
    np.testing.assert_allclose(
        gradcam_layer_map(shifted, v, x, k, **kw),
        gradcam_layer_map(lf, v, x, k, **kw) - gradcam_layer_map(lf, v, x, c, **kw),
        rtol=1e-4,
        atol=1e-6,
    )
    # FullGrad of class c: the input part is <m, x> and no bias contributes (completeness
    # holds for the shifted logit).
    gx, bias_grads = fullgrad_decomposition(shifted, v, x, c)
    np.testing.assert_allclose(gx, jnp.broadcast_to(m, x.shape), rtol=1e-5, atol=1e-6)
    for b in bias_grads.values():
        assert float(jnp.abs(b).max()) < 1e-6
    for t in (c, k):
        np.testing.assert_allclose(
            total(fullgrad_decomposition(shifted, v, x, t), x),
            shifted(v, x)[jnp.arange(3), t],
            rtol=1e-4,
            atol=1e-4,
        )
    # Guided backprop rebuilds the shifted model with guided activations: class c is m.
    np.testing.assert_allclose(
        guided_backprop(shifted, v, x, c), jnp.broadcast_to(m, x.shape), atol=1e-6
    )
    assert float(jnp.abs(guided_backprop(lf, v, x, c) - m[None]).max()) > 1e-3
    # A shift independent of the layers leaves the layer gradients unchanged; it has no
    # bias decomposition, so FullGrad refuses it rather than miss the shift's share.
    g = shift_logits(lf, lambda p, z: jnp.sum(jnp.sin(z), axis=(1, 2, 3)))
    with pytest.raises(ValueError, match="fullgrad needs logit_fn.biases.*shift_logits drops it"):
        fullgrad_decomposition(g, v, x, k)
    np.testing.assert_allclose(
        gradcam_layer_map(g, v, x, k, layer="hidden2_act"),
        gradcam_layer_map(lf, v, x, k, layer="hidden2_act"),
        rtol=1e-5,
    )


class TopLevelBias(nn.Module):
    """A ReLU net whose last bias is a param of the top-level module, outside any submodule."""

    @nn.compact
    def __call__(self, x, train=False):
        del train
        h = nn.relu(nn.Dense(5, name="hidden")(x))
        return (
            h @ self.param("kernel", nn.initializers.lecun_normal(), (5, 3))
            + self.param("bias", nn.initializers.normal(1.0), (3,))[None]
        )


def test_fullgrad_warns_naming_a_bias_outside_its_taps_and_the_gap_it_leaves():
    model = TopLevelBias()
    x = jax.random.normal(jax.random.key(1), (4, 6))
    v = init_variables(model, jax.random.key(0), x[:1])
    t = jnp.array([0, 1, 2, 0])
    with pytest.warns(FullGradWarning) as record:
        dec = fullgrad_decomposition(linen_logit_fn(model), v, x, t)
    messages = " ".join(str(w.message) for w in record)
    assert "<top-level module>" in messages and "misses up to" in messages
    assert sorted(dec.bias_gradients) == ["hidden"]
    # The gap is exactly the bias the decomposition could not see.
    gap = completeness_gap(dec, x, linen_logit_fn(model)(v, x), t)
    np.testing.assert_allclose(gap, v["params"]["bias"][t], rtol=1e-5, atol=1e-5)
