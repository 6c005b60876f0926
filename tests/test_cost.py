"""Ahead-of-time costs (``compiled_cost``) and the pieces of the full-size configs.

FLOPs are compared with closed forms (a matmul's 2mnk), memory with the argument sizes,
sharded programs with the single-device program, and the train-section options (milestones,
``max_steps``, augmentation) with what they must do.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from jaxgrad import sharding as shd
from jaxgrad.data import get_augmentation, source_shape
from jaxgrad.models import VGG11, get_model, init_variables, linen_logit_fn
from jaxgrad.training import (
    abstract_train_state,
    classifier_loss,
    compiled_cost,
    create_train_state,
    fit,
    make_optimizer,
    make_train_step,
    train_for_epochs,
)


def test_flops_and_memory_of_a_matmul_are_the_closed_forms():
    a = jax.ShapeDtypeStruct((64, 128), jnp.float32)
    b = jax.ShapeDtypeStruct((128, 32), jnp.float32)
    cost = compiled_cost(jax.jit(jnp.matmul), a, b)
    assert cost["flops"] == 2 * 64 * 128 * 32
    assert cost["memory"]["argument_bytes"] == 4 * (64 * 128 + 128 * 32)
    assert cost["memory"]["output_bytes"] == 4 * 64 * 32
    assert cost["memory"]["peak_bytes"] >= cost["memory"]["argument_bytes"]
    assert cost["flops_exact"] and cost["loops"] == [] and cost["compile_seconds"] > 0


def test_a_loop_body_is_counted_once_and_reported_with_its_trip_count():
    a = jax.ShapeDtypeStruct((32, 32), jnp.float32)
    looped = jax.jit(lambda m: jax.lax.fori_loop(0, 7, lambda i, z: z @ m, m))
    cost = compiled_cost(looped, a)
    assert cost["loops"] == [7] and not cost["flops_exact"]
    assert cost["flops"] < 2 * (2 * 32**3)  # one body's worth, not seven


def test_random_bit_loops_are_not_reported_as_model_loops():
    fn = jax.jit(lambda k, x: x + jax.random.normal(k, x.shape) @ x)
    cost = compiled_cost(fn, jax.eval_shape(lambda: jax.random.key(0)), jnp.zeros((16, 16)))
    assert cost["loops"] == [] and cost["flops_exact"]
    assert cost["flops"] >= 2 * 16**3


def test_a_users_loop_named_like_a_random_function_is_still_reported():
    def _normalize(m):  # a name that contains "_normal"
        return jax.lax.fori_loop(0, 3, lambda i, z: z @ m / jnp.linalg.norm(z), m)

    cost = compiled_cost(jax.jit(_normalize), jax.ShapeDtypeStruct((8, 8), jnp.float32))
    assert cost["loops"] == [3] and not cost["flops_exact"]


def test_a_sharded_program_reports_one_devices_share():
    mesh = shd.data_mesh()
    n = mesh.devices.size
    a = jax.ShapeDtypeStruct((8 * 16, 64), jnp.float32)
    b = jax.ShapeDtypeStruct((64, 32), jnp.float32)
    sharded = jax.jit(
        jnp.matmul,
        in_shardings=(NamedSharding(mesh, PartitionSpec("data")), shd.replicated(mesh)),
    )
    whole = compiled_cost(jax.jit(jnp.matmul), a, b)["flops"]
    assert compiled_cost(sharded, a, b)["flops"] * n == whole


def test_compiled_cost_names_what_it_needs():
    with pytest.raises(TypeError, match="fn must be a jax.jit function"):
        compiled_cost(lambda a: a @ a, jnp.zeros((2, 2)))


def test_abstract_train_state_is_the_created_states_shapes(key):
    model = get_model("cnn", features=(4, 8), dense=16)
    tx = make_optimizer("sgd", 0.1, weight_decay=5e-4)
    abstract = abstract_train_state(model, tx, (1, 8, 8, 1))
    real = create_train_state(model, tx, key, jnp.zeros((1, 8, 8, 1)))
    assert jax.tree.structure(abstract) == jax.tree.structure(real)
    for s, r in zip(jax.tree.leaves(abstract), jax.tree.leaves(real), strict=True):
        assert isinstance(s, jax.ShapeDtypeStruct) and (s.shape, s.dtype) == (r.shape, r.dtype)
    # ... and compiles a train step without any data: fwd + bwd is about 3 forward passes.
    step = make_train_step(classifier_loss(model), tx)
    batch = {
        "image": jax.ShapeDtypeStruct((32, 8, 8, 1), jnp.float32),
        "label": jax.ShapeDtypeStruct((32,), jnp.int32),
        "mask": jax.ShapeDtypeStruct((32,), jnp.float32),
    }
    cost = compiled_cost(step, abstract, batch, jax.eval_shape(lambda: jax.random.key(0)))
    fwd = compiled_cost(
        jax.jit(linen_logit_fn(model)),
        {"params": abstract.params},
        jax.ShapeDtypeStruct((32, 8, 8, 1), jnp.float32),
    )["flops"]
    assert 2 * fwd < cost["flops"] < 4 * fwd


def test_vgg11_matches_pytorchs_parameter_count_less_the_conv_biases(key):
    shapes = jax.eval_shape(
        functools.partial(init_variables, VGG11(num_classes=10)), key, jnp.zeros((1, 32, 32, 3))
    )
    conv_biases = 64 + 128 + 256 + 256 + 4 * 512  # PyTorch's, redundant before BatchNorm
    assert sum(x.size for x in jax.tree.leaves(shapes["params"])) == 9_231_114 - conv_biases
    assert set(shapes) == {"params", "batch_stats"}
    out = jax.eval_shape(
        linen_logit_fn(VGG11(num_classes=100)),
        jax.eval_shape(
            functools.partial(init_variables, VGG11(num_classes=100)),
            key,
            jnp.zeros((1, 32, 32, 3)),
        ),
        jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32),
    )
    assert out.shape == (2, 100)


def test_small_vgg_fullgrad_is_complete_and_gradcam_finds_its_last_activation(key):
    from jaxgrad.attribution import fullgrad_decomposition, gradcam

    model = get_model("vgg11", layers=(4, "M", 8, "M"), num_classes=5)
    x = jax.random.uniform(key, (2, 8, 8, 3))
    v = init_variables(model, jax.random.key(1), x[:1])
    v["batch_stats"] = jax.tree.map(lambda s: s + 0.3, v["batch_stats"])
    lf, t = linen_logit_fn(model), jnp.array([1, 4])
    x_grad, biases = fullgrad_decomposition(lf, v, x, t)
    assert set(biases) == {"bn1", "bn2", "logits"}
    total = jnp.sum(x_grad * x, axis=(1, 2, 3)) + sum(
        jnp.sum(b.reshape(2, -1), axis=1) for b in biases.values()
    )
    np.testing.assert_allclose(total, lf(v, x)[jnp.arange(2), t], rtol=1e-4)
    cam = gradcam(lf, v, x, t, layer="act2")
    assert cam.shape[:3] == x.shape[:3] and bool(jnp.all(cam >= 0))


@pytest.mark.parametrize(
    "name, fields", [("resnet18", {"widths": (4, 4, 8, 8)}), ("vgg11", {"layers": (4, "M", 8)})]
)
def test_bfloat16_compute_keeps_float32_params_and_logits(name, fields, key):
    x = jax.random.uniform(key, (2, 8, 8, 3))
    f32 = get_model(name, num_classes=10, **fields)
    bf16 = get_model(name, num_classes=10, dtype="bfloat16", **fields)
    init = jax.jit(init_variables, static_argnums=0)
    with jax.threefry_partitionable(False):  # several times faster to compile on XLA CPU
        v, v16 = init(f32, jax.random.key(1), x[:1]), init(bf16, jax.random.key(1), x[:1])
    # The same variables, all float32: only the computation is in bfloat16.
    assert jax.tree.structure(v16) == jax.tree.structure(v)
    assert {a.dtype for a in jax.tree.leaves(v16)} == {jnp.dtype(jnp.float32)}
    a, b = linen_logit_fn(f32)(v, x), linen_logit_fn(bf16)(v, x)
    assert b.dtype == jnp.float32
    # bfloat16 has 8 bits of mantissa: close to float32, not equal.
    scale = float(jnp.max(jnp.abs(a)))
    assert 0 < float(jnp.max(jnp.abs(a - b))) < 0.1 * scale + 0.05


def test_augmentations_by_name_crop_shift_and_flip(key):
    assert get_augmentation("none") is None
    x = jax.random.uniform(key, (64, 8, 8, 1), minval=0.1, maxval=1.0)  # no zeros
    padded = np.pad(np.asarray(x), ((0, 0), (4, 4), (4, 4), (0, 0)))
    flips = 0
    for name in ("cifar", "crop"):
        y = np.asarray(get_augmentation(name)(key, x))
        assert y.shape == x.shape
        for img, out in zip(padded, y, strict=True):
            # Each output is an 8x8 window of the zero-padded image, flipped or not.
            windows = [img[i : i + 8, j : j + 8] for i in range(9) for j in range(9)]
            straight = any(np.array_equal(w, out) for w in windows)
            flipped = any(np.array_equal(w[:, ::-1], out) for w in windows)
            assert straight or flipped
            flips += name == "cifar" and flipped and not straight
            assert name == "cifar" or straight  # "crop" never flips
    assert 10 < flips < 54  # about half of 64 (and the offsets vary)
    with pytest.raises(ValueError, match="augment must be one of"):
        get_augmentation("autoaugment")


def test_with_augmentation_feeds_the_loss_augmented_images(key):
    from jaxgrad.training import with_augmentation

    seen = {}

    def loss(params, state, batch, k):
        seen["x"] = batch["image"]
        return 0.0, (state, {})

    batch = {"image": jnp.ones((2, 4, 4, 1)), "label": jnp.zeros(2, jnp.int32)}
    with_augmentation(loss, lambda k, x: -x)(None, {}, batch, key)
    np.testing.assert_array_equal(seen["x"], -batch["image"])
    assert with_augmentation(loss, None) is loss


def test_unrolled_pgd_is_the_looped_attack(key):
    from jaxgrad.training import pgd_attack

    model = get_model("mlp", hidden=(16,))
    x = jax.random.uniform(key, (4, 4, 4, 1))
    v = init_variables(model, jax.random.key(1), x[:1])
    y = jnp.arange(4)
    kw = dict(key=key, norm="l2", epsilon=0.5, step_size=0.2, steps=4)
    looped = pgd_attack(linen_logit_fn(model), v, x, y, **kw)
    unrolled = pgd_attack(linen_logit_fn(model), v, x, y, unroll=True, **kw)
    np.testing.assert_allclose(looped, unrolled, rtol=1e-6, atol=1e-7)
    assert float(jnp.max(jnp.abs(looped - x))) > 0


def test_max_steps_stops_the_epochs_early(key):
    model = get_model("mlp", hidden=(8,))
    data = {
        "image": np.random.default_rng(0).random((40, 4, 4, 1), np.float32),
        "label": np.arange(40, dtype=np.int32) % 10,
    }
    tx = optax.sgd(0.1)
    kw = dict(key=key, epochs=3, batch_size=8)
    assert int(train_for_epochs(model, classifier_loss(model), tx, data, **kw).step) == 15
    short = train_for_epochs(model, classifier_loss(model), tx, data, max_steps=4, **kw)
    assert int(short.step) == 4
    with pytest.raises(ValueError, match="max_steps must be a non-negative integer"):
        train_for_epochs(model, classifier_loss(model), tx, data, max_steps=-1, **kw)


def test_source_shapes_without_loading():
    assert source_shape("tfds:cifar100", "train") == (50_000, (32, 32, 3))
    assert source_shape("tfds:svhn", "test") == (26_032, (32, 32, 3))
    assert source_shape("digits", "test") == (360, (8, 8, 1))


def test_milestones_are_epochs_of_the_train_section():
    from experiments.common import make_tx
    from experiments.configs import base

    section = base.train(
        optimizer="sgd", learning_rate=0.1, schedule="multistep", milestones=(2, 3), epochs=4
    )
    tx = make_tx(section, total_steps=40)  # 10 steps per epoch
    params = {"w": jnp.ones(())}
    state = tx.init(params)
    grads = {"w": jnp.ones(())}
    rates = []
    for _ in range(40):
        updates, state = tx.update(grads, state, params)
        rates.append(-float(updates["w"]))
    # SGD with momentum 0.9 on a constant gradient: the update is lr * (1 - 0.9^t) / 0.1.
    lr = [0.1] * 20 + [0.01] * 10 + [0.001] * 10
    momentum = 0.0
    for t, (rate, expected_lr) in enumerate(zip(rates, lr, strict=True)):
        momentum = 0.9 * momentum + 1.0
        np.testing.assert_allclose(rate, expected_lr * momentum, rtol=1e-5, err_msg=f"step {t}")


def test_bad_training_arguments_are_named_before_any_step(key):
    model = get_model("mlp", hidden=(8,))
    data = {"image": np.zeros((16, 4, 4, 1), np.float32), "label": np.zeros(16, np.int32)}
    tx = optax.sgd(0.1)
    state = create_train_state(model, tx, key, data["image"][:1])
    step = make_train_step(classifier_loss(model), tx)
    for bad in (dict(log_every=0), dict(checkpoint_every=0)):
        name = next(iter(bad))
        with pytest.raises(ValueError, match=f"{name} must be a positive integer"):
            fit(state, step, data, key=key, batch_size=8, num_steps=2, progress=False, **bad)
    assert int(state.step) == 0 and not state.params["hidden1"]["kernel"].is_deleted()
    with pytest.raises(ValueError, match="learning_rate must be a finite number in \\(0, inf\\]"):
        make_optimizer("sgd", -1.0)


def test_models_outside_the_training_contract_are_refused_by_name(key):
    import flax.linen as nn

    from jaxgrad.models import init_variables as init

    class NoTrain(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(3)(x.reshape(x.shape[0], -1))

    with pytest.raises(TypeError, match=r"must take a train argument"):
        init(NoTrain(), key, jnp.zeros((1, 4)))
    with pytest.raises(TypeError, match=r"model must be a flax.linen.Module"):
        init(lambda x: x, key, jnp.zeros((1, 4)))


def test_shards_are_checked_before_any_data_is_read():
    from jaxgrad.data import load_dataset

    for bad in ((0, 0), (3, 2), (-1, 2)):
        with pytest.raises(ValueError, match="shard"):
            load_dataset("tfds:cifar10", "train", shard=bad)  # no tfds call: nothing prepared


def test_results_json_is_strict_json(tmp_path):
    import json

    from experiments import report

    path = report.write_json(tmp_path / "r.json", {"se": np.array([np.nan, 1.0]), "x": np.inf})
    assert json.loads(path.read_text(), parse_constant=lambda c: 1 / 0) == {
        "se": [None, 1.0],
        "x": None,
    }
