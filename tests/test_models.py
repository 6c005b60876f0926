import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgrad.models import (
    MLP,
    MnistCNN,
    ResNet18,
    get_model,
    init_variables,
    linen_logit_fn,
    max_pool_2x2,
    nnx_logit_fn,
    softplus,
    zero_perturbations,
)


def n_params(tree):
    return sum(x.size for x in jax.tree.leaves(tree))


@pytest.mark.parametrize(
    "model, shape, expected_params",
    [
        (MnistCNN(), (3, 28, 28, 1), 3_274_634),  # the TF tutorial CNN: 5x5x32, 5x5x64, 1024, 10
        (MnistCNN(), (3, 8, 8, 1), 32 * 26 + 64 * (25 * 32 + 1) + 1024 * 257 + 10 * 1025),
        (MnistCNN(), (3, 56, 28, 1), None),  # BlockMNIST size
        (  # the small CNN of the BlockMNIST experiment
            MnistCNN(features=(16, 32), dense=256),
            (3, 56, 28, 1),
            16 * 26 + 32 * (25 * 16 + 1) + 256 * (14 * 7 * 32 + 1) + 10 * 257,
        ),
        (MLP(), (3, 28, 28, 1), 784 * 2500 + 2500 + 2500 * 1500 + 1500 + 1500 * 500 + 500 + 5010),
        (MLP(hidden=(32,)), (3, 8, 8, 1), 64 * 32 + 32 + 330),
    ],
)
def test_mnist_models_shapes_dtypes_and_sizes(model, shape, expected_params, key):
    variables = jax.jit(init_variables, static_argnums=0)(model, key, jnp.zeros((1, *shape[1:])))
    assert set(variables) == {"params"}
    logits = jax.jit(linen_logit_fn(model))(variables, jnp.ones(shape))
    assert logits.shape == (3, 10) and logits.dtype == jnp.float32
    if expected_params is not None:
        assert n_params(variables["params"]) == expected_params


def test_layer_names_follow_the_sanity_check_code(key):
    x = jnp.zeros((1, 8, 8, 1))
    cnn = jax.eval_shape(functools.partial(init_variables, MnistCNN()), key, x)["params"]
    assert set(cnn) == {"hidden1", "hidden2", "fc1", "softmax_linear"}
    mlp = jax.eval_shape(functools.partial(init_variables, MLP()), key, x)["params"]
    assert set(mlp) == {"hidden1", "hidden2", "hidden3", "logits"}


def test_cnn_initializers_are_the_papers(key):
    p = init_variables(MnistCNN(), key, jnp.zeros((1, 28, 28, 1)))["params"]
    np.testing.assert_array_equal(p["fc1"]["bias"], np.float32(0.1))
    w = np.asarray(p["fc1"]["kernel"])
    assert np.abs(w).max() <= 0.2 + 1e-6  # truncated at 2 std of 0.1
    assert 0.08 < w.std() < 0.09  # std of a normal(0, 0.1) truncated at 2 sigma: 0.088
    m = init_variables(MLP(), key, jnp.zeros((1, 28, 28, 1)))["params"]
    w = np.asarray(m["hidden1"]["kernel"])
    assert np.abs(w).max() <= 2 * 2 / np.sqrt(784) + 1e-6
    np.testing.assert_allclose(w.std(), 0.88 * 2 / np.sqrt(784), rtol=0.02)
    np.testing.assert_array_equal(m["hidden1"]["bias"], 0.0)


SMALL_WIDTHS = (8, 16, 32, 64)


@pytest.fixture(scope="module")
def small_resnet():
    """One initialisation of a narrow ResNet-18 shared by the tests (initialising is slow on CPU)."""
    key = jax.random.key(0)
    model = ResNet18(num_classes=10, widths=SMALL_WIDTHS)
    with jax.threefry_partitionable(False):  # same role, several times faster on XLA CPU
        variables = jax.jit(init_variables, static_argnums=0)(model, key, jnp.zeros((1, 4, 4, 3)))
    # Non-trivial running statistics, so evaluation-mode BatchNorm is not the identity.
    variables["batch_stats"] = jax.tree.map(
        lambda s: s + 0.1 * jax.random.uniform(jax.random.fold_in(key, 2), s.shape),
        variables["batch_stats"],
    )
    return variables


def test_resnet18_parameter_count_and_shapes(key, small_resnet):
    model = ResNet18(num_classes=10)
    shapes = jax.eval_shape(
        functools.partial(init_variables, model), key, jnp.zeros((1, 32, 32, 3))
    )
    assert n_params(shapes["params"]) == 11_173_962
    assert set(shapes) == {"params", "batch_stats"}
    assert n_params(shapes["batch_stats"]) == 2 * (64 + 4 * 64 + 5 * 128 + 5 * 256 + 5 * 512)
    out = jax.eval_shape(
        linen_logit_fn(model), shapes, jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
    )
    assert out.shape == (2, 10) and out.dtype == jnp.float32
    model = ResNet18(num_classes=10, widths=SMALL_WIDTHS)
    variables = small_resnet
    logits = jax.jit(linen_logit_fn(model))(variables, jnp.ones((2, 32, 32, 3)))
    assert logits.shape == (2, 10) and logits.dtype == jnp.float32
    # Training mode updates the batch statistics.
    _, new = model.apply(variables, jnp.ones((2, 32, 32, 3)), train=True, mutable=["batch_stats"])
    assert not np.allclose(
        new["batch_stats"]["stem_bn"]["mean"], variables["batch_stats"]["stem_bn"]["mean"]
    )


def _input_hessian(activation, key, variables):
    model = ResNet18(num_classes=10, activation=activation, beta=5.0, widths=SMALL_WIDTHS)
    x = jax.random.uniform(key, (1, 4, 4, 3), minval=0.1, maxval=0.9)  # a generic point
    logit_fn = linen_logit_fn(model)
    f = lambda z: logit_fn(variables, z.reshape(x.shape))[0, 3]  # noqa: E731
    return jax.jit(jax.hessian(f))(x.ravel())


def test_softplus_resnet_has_a_nonzero_input_hessian_and_relu_a_zero_one(key, small_resnet):
    h_soft = _input_hessian("softplus", key, small_resnet)
    h_relu = _input_hessian("relu", key, small_resnet)
    assert h_soft.shape == (48, 48)
    np.testing.assert_allclose(h_soft, h_soft.T, atol=1e-5 * np.abs(h_soft).max())
    assert np.abs(h_soft).max() > 1e-4
    assert np.abs(h_relu).max() == 0.0  # piecewise linear: the Hessian vanishes a.e.


def test_softplus_tends_to_relu_and_activation_by_callable(key):
    x = jnp.linspace(-3, 3, 13)
    np.testing.assert_allclose(softplus(x, beta=200.0), jax.nn.relu(x), atol=5e-3)
    model = MnistCNN(activation=jnp.tanh)
    v = init_variables(model, key, jnp.zeros((1, 8, 8, 1)))
    assert linen_logit_fn(model)(v, jnp.ones((1, 8, 8, 1))).shape == (1, 10)
    with pytest.raises(ValueError, match="activation"):
        init_variables(MnistCNN(activation="gelu"), key, jnp.zeros((1, 8, 8, 1)))


def test_reshape_max_pool_equals_reduce_window(key):
    x = jax.random.normal(key, (2, 7, 9, 3))
    expected = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
    np.testing.assert_array_equal(max_pool_2x2(x), expected)


def test_taps_expose_intermediate_gradients(key):
    model = MnistCNN()
    x = jax.random.uniform(key, (2, 8, 8, 1))
    variables = init_variables(model, key, x)
    perts = zero_perturbations(model, variables, x)
    assert set(perts) >= {"hidden1_out", "hidden2_act", "fc1_out", "softmax_linear_out"}

    def logit(p, z):
        return model.apply({**variables, "perturbations": p}, z)[:, 4].sum()

    g_pert, g_x = jax.grad(logit, argnums=(0, 1))(perts, x)
    # The gradient at the logits tap is the one-hot of the selected class.
    np.testing.assert_allclose(g_pert["softmax_linear_out"], jnp.zeros((2, 10)).at[:, 4].set(1.0))
    # Chain rule through the last layer: d logit / d fc1_act = W[:, 4].
    w = variables["params"]["softmax_linear"]["kernel"][:, 4]
    np.testing.assert_allclose(g_pert["fc1_act"], jnp.broadcast_to(w, (2, 1024)), rtol=1e-6)
    # Plain apply is unaffected by the taps.
    np.testing.assert_allclose(
        model.apply(variables, x), model.apply({**variables, "perturbations": perts}, x)
    )
    assert g_x.shape == x.shape


def test_nnx_adapter_follows_the_contract():
    from flax import nnx

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.lin = nnx.Linear(64, 10, rngs=rngs)
            self.drop = nnx.Dropout(0.5, rngs=rngs)

        def __call__(self, x):
            return self.lin(self.drop(x.reshape(x.shape[0], -1)))

    net = Net(nnx.Rngs(0))
    logit_fn, state = nnx_logit_fn(net)
    x = jnp.ones((3, 8, 8, 1))
    out = jax.jit(logit_fn)(state, x)
    np.testing.assert_array_equal(out, jax.jit(logit_fn)(state, x))  # deterministic: eval mode
    assert out.shape == (3, 10)
    expected = x.reshape(3, -1) @ net.lin.kernel[...] + net.lin.bias[...][None]  # dropout off
    np.testing.assert_allclose(out, expected, rtol=1e-5)
    # Gradients flow to the state (the params pytree of the contract).
    g = jax.grad(lambda s: logit_fn(s, x).sum())(state)
    assert jax.tree.leaves(g)
    # The user's own module is not switched to evaluation mode behind their back.
    assert net.drop.deterministic is False
    train_out = net(x)  # dropout on: about half the inputs dropped, the rest doubled
    assert not np.allclose(train_out, out)


@pytest.mark.parametrize(
    "model, good, bad, match",
    [
        (MnistCNN(), (1, 8, 8, 1), (2, 8, 8, 3), "channel"),
        (MnistCNN(), (1, 8, 8, 1), (2, 64), "rank 4"),
        (MnistCNN(), (1, 8, 8, 1), (2, 12, 12, 1), "fc1 expects"),
        (MLP(hidden=(16,)), (1, 8, 8, 1), (2, 28, 28, 1), "features"),
    ],
)
def test_bad_input_names_the_problem(model, good, bad, match, key):
    variables = init_variables(model, key, jnp.zeros(good))
    with pytest.raises(ValueError, match=match):
        linen_logit_fn(model)(variables, jnp.zeros(bad))


@pytest.mark.parametrize("bad, match", [((2, 4, 4, 1), "channel"), ((2, 48), "rank 4")])
def test_resnet_bad_input_names_the_problem(bad, match, small_resnet):
    model = ResNet18(num_classes=10, widths=SMALL_WIDTHS)
    variables = small_resnet
    with pytest.raises(ValueError, match=match):
        linen_logit_fn(model)(variables, jnp.zeros(bad))


def test_integer_input_is_rejected(key):
    variables = init_variables(MnistCNN(), key, jnp.zeros((1, 8, 8, 1)))
    with pytest.raises(TypeError, match="floating"):
        linen_logit_fn(MnistCNN())(variables, jnp.zeros((1, 8, 8, 1), jnp.int32))


def test_cnn_widths_must_be_two(key):
    with pytest.raises(ValueError, match="features must be two widths"):
        init_variables(MnistCNN(features=(8, 16, 32)), key, jnp.zeros((1, 8, 8, 1)))


def test_get_model():
    assert isinstance(get_model("cnn"), MnistCNN)
    with pytest.raises(ValueError, match="model name"):
        get_model("vgg19")
    assert get_model("vgg", layers=(8, "M", 16)).layers == (8, "M", 16)


def test_cnn_pooling_options_share_the_forward_pass(key):
    x = jax.random.uniform(key, (2, 8, 8, 1))
    v = init_variables(MnistCNN(), key, x)
    np.testing.assert_allclose(
        linen_logit_fn(MnistCNN(pooling="reduce_window"))(v, x),
        linen_logit_fn(MnistCNN())(v, x),
        rtol=1e-6,
    )
    with pytest.raises(ValueError, match="pooling"):
        linen_logit_fn(MnistCNN(pooling="mean"))(v, x)


def test_avg_pooled_softplus_cnn_is_smooth_where_max_pooling_has_kinks(x64):
    # Second directional derivatives by finite differences at the Taylor estimate's step
    # against autodiff's v^T H v: the avg-pooled softplus CNN agrees at every point of a
    # line; the max-pooled one does not where a pooling window's maximum changes within the
    # step (the kinks a Taylor trace sees and autodiff's Hessian does not).
    x = jax.random.uniform(jax.random.key(0), (1, 8, 8, 1), jnp.float64)
    v = jax.random.normal(jax.random.key(1), x.shape, jnp.float64)
    worst = {}
    for pooling in ("avg", "reshape"):
        model = MnistCNN(
            features=(3, 4), dense=8, activation="softplus", beta=10.0, pooling=pooling
        )
        variables = jax.tree.map(
            lambda a: a.astype(jnp.float64), init_variables(model, jax.random.key(2), x)
        )
        f = lambda z, m=model, w=variables: linen_logit_fn(m)(w, z)[0, 0]  # noqa: E731
        errors = []
        for t in jnp.linspace(-0.5, 0.5, 41):
            z = x + t * v
            hvv = jnp.vdot(v, jax.jvp(jax.grad(f), (z,), (v,))[1])
            h = 1e-2  # the Taylor estimate's sigma
            fd = (f(z + h * v) + f(z - h * v) - 2 * f(z)) / h**2
            errors.append(float(jnp.abs(fd - hvv) / (jnp.abs(hvv) + 1e-3)))
        worst[pooling] = max(errors)
    assert worst["avg"] < 1e-2
    assert worst["reshape"] > 0.5  # points of the line within h of a kink


@pytest.mark.parametrize(
    "strides, padding, dilation",
    [((1, 1), "SAME", (1, 1)), ((2, 2), ((1, 1), (1, 1)), (1, 1)), ((1, 2), "VALID", (2, 1))],
)
def test_loop_friendly_conv_has_the_same_values_and_derivatives(strides, padding, dilation, x64):
    from jaxgrad.models.layers import conv_general_dilated

    x = jax.random.normal(jax.random.key(0), (2, 9, 8, 3))
    k = jax.random.normal(jax.random.key(1), (3, 3, 3, 4))
    kw = dict(rhs_dilation=dilation, dimension_numbers=("NHWC", "HWIO", "NHWC"))

    def ours(a, b):
        return jnp.sum(jnp.sin(conv_general_dilated(a, b, strides, padding, **kw)))

    def ref(a, b):
        return jnp.sum(jnp.sin(jax.lax.conv_general_dilated(a, b, strides, padding, **kw)))

    np.testing.assert_allclose(ours(x, k), ref(x, k), rtol=1e-12)
    for got, want in zip(
        jax.grad(ours, argnums=(0, 1))(x, k), jax.grad(ref, argnums=(0, 1))(x, k), strict=True
    ):
        np.testing.assert_allclose(got, want, rtol=1e-10)
    # Second order, forward over reverse (what Hessian-vector products use).
    v = jax.random.normal(jax.random.key(2), x.shape)
    hvp = lambda f: jax.jvp(jax.grad(f), (x,), (v,))[1]  # noqa: E731
    np.testing.assert_allclose(
        hvp(lambda a: ours(a, k)), hvp(lambda a: ref(a, k)), rtol=1e-9, atol=1e-12
    )


def test_input_gradient_convolutions_are_canonical_inside_loops():
    """Inside a scan, JAX's own conv rule gives the input-gradient convolution a kernel with
    swapped feature dimensions (``01oi``; 3.6x slower inside loops on XLA CPU); jaxgrad's
    models keep a canonical layout."""
    import re

    from jaxgrad.gradients import input_gradients
    from jaxgrad.models.layers import conv_general_dilated

    x = jax.random.normal(jax.random.key(0), (64, 14, 14, 64))
    k = jax.random.normal(jax.random.key(1), (5, 5, 64, 32))

    def layouts(conv):
        def scanned(x, k):
            def body(acc, a):
                g = jax.grad(lambda z: jnp.sum(jnp.sin(conv(z, k, (1, 1), "SAME", **dn))))
                return acc + g(a * x), None

            return jax.lax.scan(body, jnp.zeros_like(x), jnp.linspace(0.1, 1.0, 3))[0]

        hlo = jax.jit(scanned).lower(x, k).compile().as_text()
        return re.findall(r"dim_labels=\w+_(\w+)->", hlo)

    dn = dict(dimension_numbers=("NHWC", "HWIO", "NHWC"))
    assert "01oi" in layouts(jax.lax.conv_general_dilated)  # the slow form, for reference
    assert layouts(conv_general_dilated) == ["01io", "01io"]

    model = MnistCNN()
    xs = jnp.ones((64, 28, 28, 1))
    v = init_variables(model, jax.random.key(0), xs[:1])
    lf = linen_logit_fn(model)

    def scanned(v, x):
        def body(acc, a):
            return acc + input_gradients(lf, v, a * x, jnp.zeros(64, jnp.int32)), None

        return jax.lax.scan(body, jnp.zeros_like(x), jnp.linspace(0.1, 1.0, 3))[0]

    hlo = jax.jit(scanned).lower(v, xs).compile().as_text()
    assert "01oi" not in re.findall(r"dim_labels=\w+_(\w+)->", hlo)


@pytest.mark.parametrize(
    "padding, stride, k, layout",
    [
        (((1, 1), (1, 1)), 2, 3, "NHWC"),
        ("SAME", 2, 3, "NHWC"),
        ("VALID", 2, 1, "NHWC"),
        (((0, 1), (2, 0)), 3, 3, "NHWC"),
        ("SAME", 2, 4, "NCHW"),
        ("VALID", (2, 1), 5, "NCHW"),
    ],
)
def test_second_order_convolution_is_the_same_function(padding, stride, k, layout, x64):
    # In second_order(), a strided convolution's input-gradient is the dense convolution's
    # (on a CPU): values, gradients, forward-mode tangents and the weight-gradient of the
    # input-gradient (double backprop) all equal lax.conv_general_dilated's, and the
    # compiled double backprop has no kernel-gradient of an input-dilated convolution left.
    from jax import lax

    from jaxgrad.models.layers import conv_general_dilated, second_order

    strides = (stride, stride) if isinstance(stride, int) else stride
    dn = (layout, "HWIO" if layout == "NHWC" else "OIHW", layout)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2, 9, 10, 3) if layout == "NHWC" else (2, 3, 9, 10)))
    w = jnp.asarray(rng.normal(size=(k, k, 3, 4) if layout == "NHWC" else (4, 3, k, k)))

    def f_of(conv):
        return lambda x, w: jnp.sum(jnp.sin(conv(x, w, strides, padding, dimension_numbers=dn)))

    ours, ref = f_of(conv_general_dilated), f_of(lax.conv_general_dilated)

    def double_backprop(f, x, w):
        return jax.grad(lambda w: jnp.sum(jax.grad(f)(x, w) ** 2))(w)

    with second_order():
        np.testing.assert_allclose(ours(x, w), ref(x, w), rtol=1e-12)
        for a, b in zip(jax.grad(ours, (0, 1))(x, w), jax.grad(ref, (0, 1))(x, w), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(
            jax.jvp(lambda z: ours(z, w), (x,), (jnp.cos(x),))[1],
            jax.jvp(lambda z: ref(z, w), (x,), (jnp.cos(x),))[1],
            rtol=1e-10,
        )
        np.testing.assert_allclose(
            double_backprop(ours, x, w), double_backprop(ref, x, w), rtol=1e-10, atol=1e-10
        )
        program = jax.jit(functools.partial(double_backprop, ours))
        hlo = program.lower(x, w).compile().as_text()
    # XLA CPU's slow form: the kernel-gradient of an input-dilated convolution (a window
    # both dilated and reversed); outside the block the plain first-order form makes one.
    if jax.default_backend() != "cpu":
        return  # elsewhere the plain form is kept (platform_dependent)
    slow = re.compile(r"rhs_dilate=\S+ rhs_reversal=")
    assert not slow.search(hlo)
    plain = jax.jit(functools.partial(double_backprop, ours)).lower(x, w).compile().as_text()
    assert slow.search(plain)


def test_second_order_convolution_other_forms(x64):
    # A 1-D strided convolution under vmap, and forms that keep the plain rule in
    # second_order() (a dilated kernel, an input-dilated convolution): all equal lax's.
    from jax import lax

    from jaxgrad.models.layers import conv_general_dilated, second_order

    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(3, 2, 11, 2)))  # vmapped over the first axis
    w = jnp.asarray(rng.normal(size=(3, 2, 5)))
    forms = [
        dict(window_strides=(2,), padding="SAME"),
        dict(window_strides=(2,), padding=((2, 1),), rhs_dilation=(2,)),
        dict(window_strides=(3,), padding=((0, 0),), lhs_dilation=(2,)),
    ]
    for kw in forms:
        dn = ("NWC", "WIO", "NWC")

        def loss(conv, x, w, kw=kw, dn=dn):
            per = jax.vmap(lambda xi: conv(xi, w, dimension_numbers=dn, **kw))(x)
            return jnp.sum(jnp.tanh(per))

        def double_backprop(conv):
            return jax.grad(lambda w: jnp.sum(jax.grad(loss, 1)(conv, x, w) ** 2))(w)

        with second_order():
            ours = double_backprop(conv_general_dilated)
            got = loss(conv_general_dilated, x, w)
        np.testing.assert_allclose(got, loss(lax.conv_general_dilated, x, w), rtol=1e-12)
        np.testing.assert_allclose(
            ours, double_backprop(lax.conv_general_dilated), rtol=1e-10, atol=1e-10
        )


def test_nnx_conv_takes_jaxgrad_convolution():
    # nnx.Conv passes out_sharding= to its convolution; jaxgrad's accepts it (and falls
    # back to lax's rule when one is given), so the README's recipe works for NNX too.
    from flax import nnx

    from jaxgrad.models import conv_general_dilated

    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
    stock = nnx.Conv(3, 4, (3, 3), strides=2, rngs=nnx.Rngs(0))
    ours = nnx.Conv(
        3, 4, (3, 3), strides=2, rngs=nnx.Rngs(0), conv_general_dilated=conv_general_dilated
    )
    np.testing.assert_allclose(ours(x), stock(x), rtol=1e-6, atol=1e-6)
    g_ours = jax.grad(lambda z: jnp.sum(jnp.tanh(ours(z))))(x)
    g_stock = jax.grad(lambda z: jnp.sum(jnp.tanh(stock(z))))(x)
    np.testing.assert_allclose(g_ours, g_stock, rtol=1e-5, atol=1e-6)
