import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxgrad import sharding as shd
from jaxgrad.gradients import (
    hvp,
    input_gradients,
    log_density,
    score,
    select_logits,
    shift_logits,
)
from jaxgrad.models import MLP, MnistCNN, init_variables, linen_logit_fn
from jaxgrad.score_matching import (
    anti_score_matching_loss,
    gradient_norm_regularizer,
    make_regularizer,
    regularized_loss,
    regularizer,
    score_matching_loss,
    stability_regularizer,
)
from jaxgrad.trace_estimators import (
    hessian_trace_exact,
    hessian_trace_hutchinson,
    hessian_trace_taylor,
)


def gaussian(key, d=6):
    """A Gaussian log-density with a non-diagonal precision P: H = -P everywhere."""
    a = jax.random.normal(key, (d, d), jnp.float64)
    precision = a @ a.T / d + jnp.eye(d)
    mean = jnp.linspace(-1.0, 1.0, d)

    def f(x):  # [B, d] -> [B]
        z = x - mean[None]
        return -0.5 * jnp.einsum("bi,ij,bj->b", z, precision, z)

    return f, precision, mean


def test_exact_trace_of_a_gaussian(key, x64):
    f, precision, _ = gaussian(key)
    x = jax.random.normal(jax.random.fold_in(key, 1), (5, 6), jnp.float64)
    expected = -jnp.trace(precision)
    for chunk in (None, 1, 4):
        np.testing.assert_allclose(hessian_trace_exact(f, x, chunk_size=chunk), expected, atol=1e-5)
    # Image-shaped inputs: [B, H, W, C] flattened inside f.
    fi = lambda z: f(z.reshape(z.shape[0], -1))  # noqa: E731
    np.testing.assert_allclose(
        hessian_trace_exact(fi, x.reshape(5, 1, 3, 2), chunk_size=4), expected, atol=1e-5
    )


@pytest.mark.parametrize("distribution", ["rademacher", "gaussian"])
@pytest.mark.parametrize("product", ["jvp", "vjp"])
def test_hutchinson_mean_and_variance_match_closed_forms(distribution, product, key, x64):
    f, precision, _ = gaussian(key)
    h = -precision
    n = 10_000
    x = jnp.broadcast_to(jax.random.normal(jax.random.fold_in(key, 1), (1, 6), jnp.float64), (n, 6))
    # One probe per row: n independent single-probe estimates.
    est = hessian_trace_hutchinson(
        f,
        x,
        key=jax.random.fold_in(key, 2),
        num_probes=1,
        distribution=distribution,
        product=product,
    )
    mean, var = float(jnp.mean(est)), float(jnp.var(est, ddof=1))
    assert abs(mean - float(jnp.trace(h))) < 3 * np.sqrt(var / n)
    fro2 = float(jnp.sum(h**2))
    expected_var = (
        2 * (fro2 - float(jnp.sum(jnp.diag(h) ** 2))) if distribution == "rademacher" else 2 * fro2
    )
    np.testing.assert_allclose(var, expected_var, rtol=0.10)
    # Averaging probes divides the variance.
    est16 = hessian_trace_hutchinson(
        f,
        x[:2000],
        key=key,
        num_probes=16,
        distribution=distribution,
        product=product,
        chunk_size=5,
    )
    np.testing.assert_allclose(float(jnp.var(est16, ddof=1)), expected_var / 16, rtol=0.15)


def test_rademacher_hutchinson_is_exact_for_a_diagonal_hessian(key, x64):
    f = lambda x: -0.5 * jnp.sum(jnp.array([[1.0, 2.0, 3.0]]) * x**2, axis=-1)  # noqa: E731
    est = hessian_trace_hutchinson(f, jnp.ones((4, 3)), key=key, num_probes=3)
    np.testing.assert_allclose(est, -6.0, rtol=1e-12)


def test_taylor_variance_and_antithetic_variance(key, x64):
    f, precision, mean = gaussian(key)
    h = -precision
    n = 20_000
    x0 = jax.random.normal(jax.random.fold_in(key, 1), (1, 6), jnp.float64)
    g = -(x0[0] - mean) @ precision
    x = jnp.broadcast_to(x0, (n, 6))
    fro2 = float(jnp.sum(h**2))
    for sigma in (0.1, 0.5):
        est = hessian_trace_taylor(f, x, key=jax.random.fold_in(key, 3), sigma=sigma)
        var = float(jnp.var(est, ddof=1))
        np.testing.assert_allclose(var, 4 * float(g @ g) / sigma**2 + 2 * fro2, rtol=0.15)
        assert abs(float(jnp.mean(est)) - float(jnp.trace(h))) < 3 * np.sqrt(
            var / n
        )  # unbiased: quadratic
    anti = hessian_trace_taylor(f, x, key=key, sigma=0.1, antithetic=True)
    np.testing.assert_allclose(float(jnp.var(anti, ddof=1)), 2 * fro2, rtol=0.15)


def test_taylor_bias_shrinks_with_sigma(key, x64):
    # f(x) = sum exp(a x_i): E exp(a (x + sigma z)) = exp(a x + a^2 sigma^2 / 2), so the
    # estimator's expectation is trace(H) * 2 (exp(a^2 sigma^2 / 2) - 1) / (a^2 sigma^2).
    a = 1.5
    f = lambda x: jnp.sum(jnp.exp(a * x), axis=-1)  # noqa: E731
    x0 = jnp.array([[0.2, -0.4, 0.1]])
    trace = float(jnp.sum(a**2 * jnp.exp(a * x0)))
    np.testing.assert_allclose(hessian_trace_exact(f, x0), trace, rtol=1e-12)
    n = 200_000
    x = jnp.broadcast_to(x0, (n, 3))
    biases = []
    for sigma in (0.8, 0.4, 0.2):
        expectation = trace * 2 * np.expm1(a**2 * sigma**2 / 2) / (a**2 * sigma**2)
        est = hessian_trace_taylor(
            f, x, key=jax.random.fold_in(key, int(sigma * 10)), sigma=sigma, antithetic=True
        )
        se = float(jnp.std(est)) / np.sqrt(n)
        assert abs(float(jnp.mean(est)) - expectation) < 3 * se + 1e-9
        biases.append(expectation - trace)
    assert biases[0] > biases[1] > biases[2] > 0
    np.testing.assert_allclose(biases[1] / biases[2], 4.0, rtol=0.05)  # O(sigma^2)


@pytest.mark.parametrize("estimator", ["exact", "hutchinson"])
def test_score_matching_recovers_a_gaussian(estimator, key, x64):
    true_mean = jnp.array([1.0, -2.0, 0.5])
    true_std = jnp.array([0.5, 1.0, 2.0])
    data = true_mean[None] + true_std[None] * jax.random.normal(key, (4000, 3), jnp.float64)
    theta0 = {"mean": jnp.zeros(3), "log_prec": jnp.zeros(3)}

    def loss(theta, k):
        def f(x):
            prec = jnp.exp(theta["log_prec"])[None]
            return -0.5 * jnp.sum(prec * (x - theta["mean"][None]) ** 2, axis=-1)

        if estimator == "exact":
            trace = hessian_trace_exact
        else:
            trace = functools.partial(hessian_trace_hutchinson, distribution="gaussian")
        return jnp.mean(score_matching_loss(f, data, key=k, trace_estimator=trace))

    steps = 1500
    tx = optax.adam(optax.cosine_decay_schedule(0.05, steps))

    @jax.jit
    def run(theta):
        def body(carry, i):
            th, st = carry
            g = jax.grad(loss)(th, jax.random.fold_in(key, i))
            upd, st = tx.update(g, st, th)
            return (optax.apply_updates(th, upd), st), None

        (th, _), _ = jax.lax.scan(body, (theta, tx.init(theta)), jnp.arange(steps))
        return th

    theta = run(theta0)
    np.testing.assert_allclose(theta["mean"], true_mean, rtol=0.05, atol=0.05 * 0.5)
    np.testing.assert_allclose(jnp.exp(theta["log_prec"]), 1 / true_std**2, rtol=0.05)
    # The exact optimum is the sample mean and inverse sample variance.
    if estimator == "exact":
        np.testing.assert_allclose(theta["mean"], data.mean(0), atol=1e-3)
        np.testing.assert_allclose(jnp.exp(theta["log_prec"]), 1 / data.var(0), rtol=1e-3)


@pytest.fixture(scope="module")
def small_cnns():
    x = jax.random.uniform(jax.random.key(3), (2, 6, 6, 1), minval=0.1, maxval=0.9)
    out = {}
    for act in ("softplus", "relu"):
        model = MnistCNN(activation=act, beta=3.0)
        variables = init_variables(model, jax.random.key(1), x[:1])
        out[act] = (linen_logit_fn(model), variables)
    return out, x


def test_exact_trace_equals_jax_hessian_on_cnns(small_cnns):
    models, x = small_cnns
    target = jnp.array([3, 7])
    for act, (logit_fn, variables) in models.items():
        f = lambda z, lf=logit_fn, v=variables: select_logits(lf(v, z), target)  # noqa: E731
        exact = jax.jit(functools.partial(hessian_trace_exact, f, chunk_size=12))(x)
        for b in range(2):
            fb = lambda z, b=b, lf=logit_fn, v=variables: lf(v, z.reshape(1, 6, 6, 1))[0, target[b]]  # noqa: E731
            ref = jnp.trace(jax.hessian(fb)(x[b].ravel()))
            np.testing.assert_allclose(exact[b], ref, rtol=1e-4, atol=1e-6)
        if act == "relu":
            assert jnp.all(exact == 0.0)
        else:
            assert jnp.all(jnp.abs(exact) > 1e-4)


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


@pytest.fixture(scope="module")
def smooth_mlp():
    """A small softplus MLP: smooth everywhere (no ReLU or max-pool kinks)."""
    model = MLP(hidden=(32, 16), activation="softplus", beta=3.0)
    x = jax.random.uniform(jax.random.key(3), (2, 6, 6, 1), minval=0.1, maxval=0.9)
    variables = init_variables(model, jax.random.key(1), x[:1])
    return (linen_logit_fn(model), variables), x


def test_estimators_agree_with_each_other_on_a_smooth_model(smooth_mlp, key):
    (logit_fn, variables), x = smooth_mlp
    n = 512
    xs = jnp.repeat(x, n, axis=0)  # n independent single-probe estimates per image
    target = jnp.repeat(jnp.array([3, 7]), n)
    f = lambda z: select_logits(logit_fn(variables, z), target)  # noqa: E731
    exact = hessian_trace_exact(
        lambda z: select_logits(logit_fn(variables, z), jnp.array([3, 7])), x
    )
    estimates = {
        "hutchinson": hessian_trace_hutchinson(
            f, xs, key=key, distribution="gaussian", chunk_size=1
        ),
        "taylor_antithetic": hessian_trace_taylor(f, xs, key=key, sigma=0.05, antithetic=True),
    }
    for name, est in estimates.items():
        est = est.reshape(2, n)
        se = jnp.std(est, axis=1) / np.sqrt(n)
        assert jnp.all(jnp.abs(est.mean(1) - exact) < 4 * se), (name, est.mean(1), exact, se)


def taylor_rounding(f, x, sigma):
    """Float32 rounding bound of the Taylor estimate: (2 / sigma^2) * a few ulps of |f|.

    f(x + v) - f(x) cancels catastrophically for small sigma, so programs that round
    differently (jit fusion, another device count) legitimately differ by this much.
    """
    return float(2 / sigma**2 * 8 * np.finfo(np.float32).eps * jnp.max(jnp.abs(f(x))))


def test_taylor_sees_the_kinks_that_autodiff_hessians_ignore(small_cnns, key):
    # Max-pooling is piecewise: jax.hessian differentiates inside the current piece, while
    # f(x + v) - f(x) crosses the kinks, whose contribution grows like 1 / sigma.
    models, x = small_cnns
    logit_fn, variables = models["softplus"]
    n = 512
    f = lambda z: select_logits(logit_fn(variables, z), jnp.repeat(jnp.array([3, 7]), n))  # noqa: E731
    exact = hessian_trace_exact(
        lambda z: select_logits(logit_fn(variables, z), jnp.array([3, 7])), x
    )
    devs = []
    for sigma in (0.05, 0.01):
        est = jax.jit(
            lambda z, s=sigma: hessian_trace_taylor(f, z, key=key, sigma=s, antithetic=True)
        )(jnp.repeat(x, n, axis=0)).reshape(2, n)
        devs.append(
            float(jnp.max(jnp.abs(est.mean(1) - exact) / (jnp.std(est, axis=1) / np.sqrt(n))))
        )
    assert devs[1] > devs[0] > 3  # many standard errors away, and further as sigma shrinks


def test_jit_vmap_grad_and_determinism(smooth_mlp, key):
    (logit_fn, variables), x = smooth_mlp
    target = jnp.array([3, 7])
    f = lambda z: select_logits(logit_fn(variables, z), target)  # noqa: E731
    for fn in (
        functools.partial(hessian_trace_exact, f, chunk_size=9),
        functools.partial(hessian_trace_hutchinson, f, key=key, num_probes=3, chunk_size=2),
        functools.partial(hessian_trace_taylor, f, key=key, sigma=0.01, num_samples=3),
        functools.partial(
            score_matching_loss,
            f,
            key=key,
            trace_estimator=functools.partial(hessian_trace_taylor, num_samples=2),
        ),
    ):
        eager = fn(x)
        assert eager.shape == (2,)
        np.testing.assert_allclose(
            jax.jit(fn)(x), eager, rtol=1e-5, atol=taylor_rounding(f, x, 0.01)
        )
        np.testing.assert_array_equal(fn(x), eager)  # same key, same result
    # vmap over a leading axis of x (each slice a batch of 1).
    per = jax.vmap(
        lambda z: hessian_trace_exact(
            lambda y: select_logits(logit_fn(variables, y), target[:1]), z[None]
        )
    )(x)
    np.testing.assert_allclose(per[0, 0], hessian_trace_exact(f, x)[0], rtol=1e-5)
    # grad with respect to params of every regularized loss (double backprop) is finite.
    for kind in ("score_matching", "anti_score_matching", "gradient_norm", "none"):
        g = jax.jit(
            jax.grad(
                lambda p, k=kind: jnp.mean(
                    regularized_loss(logit_fn, p, x, target, kind=k, key=key)
                )
            )
        )(variables)
        assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(g))


def test_one_and_eight_devices_agree(smooth_mlp, key):
    (logit_fn, variables), x = smooth_mlp
    xb = jnp.tile(x, (4, 1, 1, 1))  # batch 8
    target = jnp.arange(8) % 10
    f = lambda z: select_logits(logit_fn(variables, z), target)  # noqa: E731
    mesh = shd.data_mesh()
    xs = shd.shard_batch(xb, mesh)
    for fn in (
        functools.partial(hessian_trace_exact, f, chunk_size=12),
        functools.partial(hessian_trace_taylor, f, key=key, sigma=0.01, num_samples=2),
        functools.partial(hessian_trace_hutchinson, f, key=key, num_probes=2),
    ):
        one = jax.jit(fn)(xb)
        eight = jax.jit(fn)(xs)
        np.testing.assert_allclose(eight, one, rtol=1e-5, atol=taylor_rounding(f, xb, 0.01))


def test_losses_and_regularizers_closed_forms(key, x64):
    f, precision, mean = gaussian(key)
    x = jax.random.normal(jax.random.fold_in(key, 1), (4, 6), jnp.float64)
    g = -(x - mean[None]) @ precision
    np.testing.assert_allclose(gradient_norm_regularizer(f, x), 0.5 * jnp.sum(g**2, -1), rtol=1e-10)
    np.testing.assert_allclose(
        score_matching_loss(f, x, trace_estimator=hessian_trace_exact),
        -jnp.trace(precision) + 0.5 * jnp.sum(g**2, -1),
        rtol=1e-10,
    )
    np.testing.assert_allclose(stability_regularizer(jnp.array([-2.0, 3.0])), [4.0, 9.0])
    np.testing.assert_allclose(
        anti_score_matching_loss(jnp.array([5.0, 2000.0]), tau=1000.0), [-5.0, -1000.0]
    )


def test_regularized_loss_is_eq_4(key, x64):
    w = jax.random.normal(key, (3, 4), jnp.float64)
    logit_fn = lambda p, x: jnp.tanh(x @ p.T) + 0.5 * (x**2).sum(-1, keepdims=True) * p[:, 0][None]  # noqa: E731
    x = jax.random.normal(jax.random.fold_in(key, 1), (5, 4), jnp.float64)
    y = jnp.array([0, 1, 2, 1, 0])
    ce = optax.softmax_cross_entropy_with_integer_labels(logit_fn(w, x), y)
    f = lambda z: select_logits(logit_fn(w, z), y)  # noqa: E731
    h = hessian_trace_exact(f, x)
    gn = gradient_norm_regularizer(f, x)
    np.testing.assert_allclose(regularized_loss(logit_fn, w, x, y, kind="none"), ce, rtol=1e-10)
    np.testing.assert_allclose(
        regularized_loss(logit_fn, w, x, y, kind="gradient_norm", lam=0.1),
        ce + 0.1 * gn,
        rtol=1e-10,
    )
    np.testing.assert_allclose(
        regularized_loss(
            logit_fn,
            w,
            x,
            y,
            kind="score_matching",
            lam=0.1,
            mu=0.01,
            trace_estimator=hessian_trace_exact,
        ),
        ce + 0.1 * (h + gn + 0.01 * h**2),
        rtol=1e-10,
    )
    np.testing.assert_allclose(
        regularized_loss(
            logit_fn,
            w,
            x,
            y,
            kind="anti_score_matching",
            lam=0.1,
            tau=0.0,
            trace_estimator=hessian_trace_exact,
        ),
        ce - 0.1 * jnp.minimum(h, 0.0),
        rtol=1e-10,
    )
    # The Taylor default draws from the key; the same key gives the same loss.
    a = regularized_loss(logit_fn, w, x, y, kind="score_matching", key=key)
    np.testing.assert_array_equal(
        a, regularized_loss(logit_fn, w, x, y, kind="score_matching", key=key)
    )
    r = regularizer(logit_fn, w, x, y, kind="score_matching", key=key)
    np.testing.assert_allclose(a, ce + 1e-3 * r, rtol=1e-12)  # the paper's lam
    # The one place Eq. 4 is weighted: make_regularizer gives lam * R with the paper's values.
    reg = make_regularizer("score_matching")
    np.testing.assert_allclose(reg(logit_fn, w, x, y, key=key), 1e-3 * r, rtol=1e-12)

    # The Taylor estimator reuses f(x) from the gradient's forward pass: same numbers as a
    # wrapper that hides f_x= (and so recomputes f(x)).
    def no_f_x(f_, x_, *, key):
        return hessian_trace_taylor(f_, x_, key=key)

    np.testing.assert_allclose(
        regularizer(logit_fn, w, x, y, kind="score_matching", key=key, trace_estimator=no_f_x),
        r,
        rtol=1e-12,
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


def test_bad_arguments_are_named(key):
    f = lambda x: jnp.sum(x**2, axis=-1)  # noqa: E731
    x = jnp.ones((2, 3))
    with pytest.raises(ValueError, match="num_probes"):
        hessian_trace_hutchinson(f, x, key=key, num_probes=0)
    with pytest.raises(ValueError, match="distribution"):
        hessian_trace_hutchinson(f, x, key=key, distribution="uniform")
    with pytest.raises(ValueError, match="product must be one of"):
        hessian_trace_hutchinson(f, x, key=key, product="fwd")
    with pytest.raises(ValueError, match="sigma"):
        hessian_trace_taylor(f, x, key=key, sigma=0.0)
    with pytest.raises(ValueError, match="chunk_size"):
        hessian_trace_exact(f, x, chunk_size=0)
    with pytest.raises(TypeError, match="key"):
        hessian_trace_taylor(f, x)
    with pytest.raises(ValueError, match="rank|batch axis"):
        hessian_trace_exact(f, jnp.ones(3))
    with pytest.raises(ValueError, match="kind"):
        regularized_loss(lambda p, z: z, None, x, jnp.zeros(2, jnp.int32), kind="l2")
    with pytest.raises(ValueError, match="v must have"):
        hvp(f, x, jnp.ones(3))


def test_flat_draws_equal_shaped_draws(key):
    from jaxgrad import _random

    shape = (3, 5, 4, 2)
    np.testing.assert_array_equal(_random.normal(key, shape), jax.random.normal(key, shape))
    np.testing.assert_array_equal(
        _random.rademacher(key, shape), jax.random.rademacher(key, shape, jnp.float32)
    )


@pytest.mark.parametrize("kind", ["score_matching", "anti_score_matching", "gradient_norm", "none"])
def test_regularized_training_step_is_eq_4(kind, smooth_mlp, key):
    from jaxgrad.training import create_train_state, make_train_step, regularized_classifier_loss

    (logit_fn, variables), x = smooth_mlp
    model = MLP(hidden=(32, 16), activation="softplus", beta=3.0)
    batch = {"image": jnp.tile(x, (4, 1, 1, 1)), "label": jnp.arange(8) % 10, "mask": jnp.ones(8)}
    loss_fn = regularized_classifier_loss(model, kind=kind, lam=0.1)
    loss, (_, metrics) = loss_fn(variables["params"], {}, batch, key)
    # The regularizer's key is fold_in(key, 1); with it, the loss is the mean of Eq. 4.
    expected = regularized_loss(
        logit_fn,
        variables,
        batch["image"],
        batch["label"],
        kind=kind,
        lam=0.1,
        key=jax.random.fold_in(key, 1),
    )
    np.testing.assert_allclose(loss, jnp.mean(expected), rtol=1e-5)
    tx = optax.sgd(1e-3)
    state = create_train_state(model, tx, jax.random.key(0), x[:1])
    step = make_train_step(loss_fn, tx)
    for _ in range(2):
        state, m = step(state, batch, key)
    assert bool(jnp.isfinite(m["loss"])) and int(state.step) == 2
