"""The score-matching family of losses and Eq. 4, against closed forms."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxgrad.gradients import (
    select_logits,
)
from jaxgrad.models import MLP
from jaxgrad.score_matching import (
    anti_score_matching_loss,
    gradient_norm_regularizer,
    logits_with_vjp,
    make_regularizer,
    regularized_loss,
    regularized_loss_with_aux,
    regularizer,
    score_matching_loss,
    stability_regularizer,
)
from jaxgrad.trace_estimators import (
    hessian_trace_exact,
    hessian_trace_hutchinson,
    hessian_trace_taylor,
)


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


def test_losses_and_regularizers_closed_forms(gaussian, key, x64):
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


def test_bad_arguments_are_named():
    x = jnp.ones((2, 3))
    with pytest.raises(ValueError, match="kind must be one of"):
        regularized_loss(lambda p, z: z, None, x, jnp.zeros(2, jnp.int32), kind="l2")
    with pytest.raises(ValueError, match="kind must be one of"):
        make_regularizer("l2")
    lf = lambda p, z: z @ p  # noqa: E731
    with pytest.raises(ValueError, match="hessian_trace_taylor is stochastic: pass key="):
        regularized_loss(lf, jnp.ones((3, 2)), x, jnp.zeros(2, jnp.int32), kind="score_matching")


def _separate_loss(logit_fn, x, y, kind, key, lam=0.1):
    """Eq. 4's mean loss with the cross-entropy and the regularizer on separate passes."""
    reg = make_regularizer(kind, lam=lam, trace_estimator=None)

    def loss(p):
        logits, aux = logit_fn(p, x)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        r = reg(lambda q, z: logit_fn(q, z)[0], p, x, y, key=key)  # no forward=: its own pass
        return jnp.mean(ce + r), aux

    return loss


def _grad_reference(logit_fn, params, x, y, kind, key):
    return jax.grad(_separate_loss(logit_fn, x, y, kind, key), has_aux=True)(params)


def _loss_reference(logit_fn, params, x, y, kind, key):
    return _separate_loss(logit_fn, x, y, kind, key)(params)[0]


@pytest.mark.parametrize("kind", ["score_matching", "anti_score_matching", "gradient_norm"])
def test_shared_forward_pass_gives_the_same_loss_and_gradients(kind, key, x64):
    # A plain logit_fn (float64), and an NNX module with BatchNorm in training mode whose
    # (logits, updated state) the loss returns: the loss shares its forward pass with the
    # regularizer; the reference runs them separately. Same values, gradients, statistics.
    from flax import nnx

    from jaxgrad.models import nnx_train_logit_fn

    w = jax.random.normal(key, (3, 4), jnp.float64)
    plain = lambda p, z: (jnp.tanh(z @ p.T) + 0.3 * jnp.sin(z).sum(-1, keepdims=True), None)  # noqa: E731
    x = jax.random.normal(jax.random.fold_in(key, 1), (5, 4), jnp.float64)
    y = jnp.array([0, 1, 2, 1, 0])
    k = jax.random.fold_in(key, 2)

    def shared_loss(lf, p):
        loss, aux = regularized_loss_with_aux(lf, p, x, y, kind=kind, key=k, lam=0.1)
        return jnp.mean(loss), aux.model_aux

    g_ref, _ = _grad_reference(plain, w, x, y, kind, k)
    g, _ = jax.grad(lambda p: shared_loss(plain, p), has_aux=True)(w)
    np.testing.assert_allclose(g, g_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(shared_loss(plain, w)[0], _loss_reference(plain, w, x, y, kind, k))

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.fc1 = nnx.Linear(4, 8, rngs=rngs, param_dtype=jnp.float64)
            self.bn = nnx.BatchNorm(8, rngs=rngs, param_dtype=jnp.float64)
            self.fc2 = nnx.Linear(8, 3, rngs=rngs, param_dtype=jnp.float64)

        def __call__(self, z):
            return self.fc2(nnx.softplus(self.bn(self.fc1(z))))

    train_fn, params, state = nnx_train_logit_fn(Net(nnx.Rngs(0)))
    lf = lambda p, z: train_fn(p, state, z)  # noqa: E731
    g_ref, state_ref = _grad_reference(lf, params, x, y, kind, k)
    g, new_state = jax.grad(lambda p: shared_loss(lf, p), has_aux=True)(params)
    np.testing.assert_allclose(
        shared_loss(lf, params)[0], _loss_reference(lf, params, x, y, kind, k), rtol=1e-12
    )
    chex_close = functools.partial(np.testing.assert_allclose, rtol=1e-9, atol=1e-12)
    jax.tree.map(chex_close, g, g_ref)
    jax.tree.map(chex_close, new_state, state_ref)


def test_training_step_shares_one_backward_pass(key):
    # Counted in the lowered program (no compilation): with the regularizer reusing the
    # loss's forward pass, the regularized step has no convolution of a separate
    # cross-entropy pass; hiding forward= from the regularizer brings them back.
    from jaxgrad.models import MnistCNN
    from jaxgrad.training import (
        classifier_loss,
        create_train_state,
        make_train_step,
        regularized_classifier_loss,
    )

    model = MnistCNN(activation="softplus", beta=10.0)
    x = jax.random.uniform(key, (4, 28, 28, 1))
    batch = {"image": x, "label": jnp.arange(4), "mask": jnp.ones(4)}
    tx = optax.sgd(0.1)
    state = create_train_state(model, tx, jax.random.key(0), x[:1])

    def convs(loss_fn):
        step = make_train_step(loss_fn, tx, donate=False)
        return step.lower(state, batch, key).as_text().count("stablehlo.convolution")

    reg = make_regularizer("score_matching")

    def own_pass(lf, p, z, t, *, key=None):  # the same regularizer without forward=
        return reg(lf, p, z, t, key=key)

    ce = convs(classifier_loss(model))
    shared = convs(regularized_classifier_loss(model, kind="score_matching"))
    separate = convs(classifier_loss(model, regularizer=own_pass))
    # The separate cross-entropy pass is the whole cross-entropy step's convolutions:
    # its forward pass (two) and its backward pass (three), all gone when shared.
    assert separate - shared == ce == 5, (ce, shared, separate)
    # The same in regularized_loss (a logit_fn in evaluation mode) against separate passes.
    from jaxgrad.models import linen_logit_fn

    lf, variables = linen_logit_fn(model), {"params": state.params}
    pair = lambda p, z: (lf(p, z), None)  # noqa: E731

    def grad_convs(loss):
        return jax.jit(jax.grad(loss)).lower(variables).as_text().count("stablehlo.convolution")

    def shared_loss(v):
        return jnp.mean(regularized_loss(lf, v, x, batch["label"], kind="score_matching", key=key))

    own = _separate_loss(pair, x, batch["label"], "score_matching", key, lam=None)
    assert grad_convs(lambda v: own(v)[0]) - grad_convs(shared_loss) == ce
    # Same gradients both ways (float32; gradient norm, which has no Taylor difference
    # quotient to magnify rounding by 2 / sigma^2; every kind is compared in float64 above).
    gn = make_regularizer("gradient_norm", lam=0.1)
    loss_shared = classifier_loss(model, regularizer=gn)
    loss_separate = classifier_loss(
        model, regularizer=lambda lf, p, z, t, *, key=None: gn(lf, p, z, t, key=key)
    )
    grads = [
        jax.grad(lambda p, lf=lf: lf(p, {}, batch, key)[0])(state.params)
        for lf in (loss_shared, loss_separate)
    ]
    jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=2e-4, atol=1e-6), *grads)


def test_forward_is_checked():
    lf = lambda p, z: z @ p  # noqa: E731
    x, y, p = jnp.ones((2, 3)), jnp.zeros(2, jnp.int32), jnp.ones((3, 4))
    fwd, aux = logits_with_vjp(lf, p, x)
    assert aux is None and fwd.logits.shape == (2, 4)
    np.testing.assert_allclose(
        regularizer(lf, p, x, y, kind="gradient_norm", forward=fwd),
        regularizer(lf, p, x, y, kind="gradient_norm"),
    )
    with pytest.raises(ValueError, match="forward must be a jaxgrad.score_matching.Forward"):
        regularizer(lf, p, x, y, kind="gradient_norm", forward=(fwd.logits, fwd.vjp))
    with pytest.raises(ValueError, match=r"forward.logits must have shape \[B, K\] with B = 2"):
        regularizer(lf, p, x, y, kind="gradient_norm", forward=logits_with_vjp(lf, p, x[:1])[0])
    with pytest.raises(ValueError, match=r"logit_fn must return \(logits, aux\)"):
        logits_with_vjp(lf, p, x, has_aux=True)
    with pytest.raises(ValueError, match=r"logit_fn must return logits of shape \[B, K\]"):
        logits_with_vjp(lambda p, z: (z @ p)[:, 0], p, x)
    # What a training loss reads to share its pass, and to trace it for double backprop.
    marks = {
        kind: (make_regularizer(kind).accepts_forward, make_regularizer(kind).double_backprop)
        for kind in ("none", "gradient_norm", "score_matching", "anti_score_matching")
    }
    assert marks == {
        "none": (False, False),
        "gradient_norm": (True, True),
        "score_matching": (True, True),
        "anti_score_matching": (True, False),  # Taylor: forward passes only
    }
    # Hutchinson differentiates its own passes (traced by regularizer), not the shared one.
    hutchinson = make_regularizer("anti_score_matching", trace_estimator=hessian_trace_hutchinson)
    assert hutchinson.accepts_forward and not hutchinson.double_backprop
    # A forward pass made outside the differentiated function is refused, not used.
    with pytest.raises(ValueError, match="forward was computed outside"):
        jax.grad(lambda q: regularizer(lf, q, x, y, kind="gradient_norm", forward=fwd).sum())(p)
    # (logits, aux) where logits are expected, and the reverse, are named.
    with pytest.raises(ValueError, match="logit_fn returned a tuple"):
        regularized_loss(lambda q, z: (lf(q, z), None), p, x, y, kind="gradient_norm")
    with pytest.raises(ValueError, match=r"logit_fn must return \(logits, aux\)"):
        regularized_loss_with_aux(lf, p, x, y, kind="none")
    with pytest.raises(ValueError, match="trace_estimator must be"):
        make_regularizer("score_matching", trace_estimator="hutchinson")
