"""PGD: the optimum of a linear model in closed form, ball and range constraints, training."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxgrad.models import MLP
from jaxgrad.training import (
    adversarial_classifier_loss,
    create_train_state,
    make_train_step,
    pgd_attack,
)


def linear(w, x):
    return x.reshape(len(x), -1) @ w


@pytest.fixture
def lin():
    w = jnp.asarray(np.random.default_rng(0).normal(size=(6, 2)), jnp.float32)
    x = jnp.asarray(np.random.default_rng(1).uniform(0.3, 0.7, size=(5, 6)), jnp.float32)
    return w, x, jnp.zeros(5, jnp.int32)


def test_linf_pgd_reaches_the_closed_form_optimum_of_a_linear_model(lin):
    """For 2 classes, CE of class 0 grows with (w1 - w0) . x: the optimum is the corner
    x + eps * sign(w1 - w0) (inside the data range here)."""
    w, x, y = lin
    adv = pgd_attack(linear, w, x, y, key=jax.random.key(0), epsilon=0.1, step_size=0.02, steps=20)
    want = x + 0.1 * jnp.sign(w[:, 1] - w[:, 0])[None]
    np.testing.assert_allclose(adv, want, atol=1e-6)


def test_l2_pgd_reaches_the_closed_form_optimum_of_a_linear_model(lin):
    w, x, y = lin
    d = w[:, 1] - w[:, 0]
    want = x + 0.2 * (d / jnp.linalg.norm(d))[None]
    kw = dict(norm="l2", epsilon=0.2, step_size=0.05, clip=None)
    adv = pgd_attack(linear, w, x, y, key=None, random_start=False, steps=6, **kw)
    np.testing.assert_allclose(adv, want, atol=1e-6)
    # From a random start the component off the optimum shrinks with every projection.
    adv = pgd_attack(linear, w, x, y, key=jax.random.key(0), steps=60, **kw)
    np.testing.assert_allclose(adv, want, atol=1e-3)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_constraints_hold_and_the_loss_grows(norm):
    model = MLP(hidden=(32,), num_classes=3)
    x = jax.random.uniform(jax.random.key(1), (8, 4, 4, 1))
    v = model.init(jax.random.key(0), x[:1])
    lf = lambda p, z: model.apply(p, z)  # noqa: E731
    y = jnp.argmax(lf(v, x), axis=1)
    eps = 0.05 if norm == "linf" else 0.5
    adv = pgd_attack(
        lf, v, x, y, key=jax.random.key(2), norm=norm, epsilon=eps, step_size=eps / 4, steps=10
    )
    delta = (adv - x).reshape(8, -1)
    size = jnp.abs(delta).max(1) if norm == "linf" else jnp.linalg.norm(delta, axis=1)
    assert float(size.max()) <= eps * (1 + 1e-5)
    assert float(adv.min()) >= 0 and float(adv.max()) <= 1
    ce = lambda z: optax.softmax_cross_entropy_with_integer_labels(lf(v, z), y)  # noqa: E731
    assert bool(jnp.all(ce(adv) >= ce(x) - 1e-6)) and float(jnp.mean(ce(adv) - ce(x))) > 0
    with pytest.raises(ValueError, match="norm must be one of"):
        pgd_attack(lf, v, x, y, key=None, norm="l1")
    with pytest.raises(ValueError, match="random_start=True needs key="):
        pgd_attack(lf, v, x, y, key=None)


def test_adversarial_training_step_runs_and_lowers_the_adversarial_loss():
    model = MLP(hidden=(32,), num_classes=2)
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 64).astype(np.int32)
    x = (0.5 + 0.3 * (2 * labels[:, None] - 1) * np.ones((64, 16))).astype(np.float32)
    x += rng.normal(scale=0.05, size=x.shape).astype(np.float32)
    batch = {
        "image": jnp.asarray(x.reshape(64, 4, 4, 1)),
        "label": jnp.asarray(labels),
        "mask": jnp.ones(64),
    }
    tx = optax.adam(1e-2)
    state = create_train_state(model, tx, jax.random.key(0), batch["image"][:1])
    loss_fn = adversarial_classifier_loss(model, norm="linf", epsilon=0.1, step_size=0.03, steps=5)
    step = make_train_step(loss_fn, tx)
    losses = []
    for i in range(30):
        state, metrics = step(state, batch, jax.random.key(i))
        losses.append(float(metrics["loss"]))
    assert losses[-1] < 0.5 * losses[0]
    with pytest.raises(ValueError, match=r"epsilon must be a finite number in \[0, inf\]"):
        adversarial_classifier_loss(model, epsilon=-1.0)


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"epsilon": jnp.array(-0.1)}, "epsilon must be a finite number in"),
        ({"epsilon": np.float32("nan")}, "epsilon must be a finite number"),
        ({"step_size": jnp.array(-1.0)}, "step_size must be a finite number in"),
        ({"steps": True}, "steps must be a non-negative integer"),
    ],
)
def test_pgd_checks_its_numbers_whatever_their_type(kw, message):
    from jaxgrad.training import pgd_attack

    lf = lambda p, x: x.reshape(len(x), -1) @ p  # noqa: E731
    w = jnp.ones((4, 3))
    x, y = jnp.ones((2, 2, 2, 1)), jnp.array([0, 1])
    args = {**dict(key=jax.random.key(0), epsilon=0.1, step_size=0.01, steps=2), **kw}
    with pytest.raises(ValueError, match=message):
        pgd_attack(lf, w, x, y, **args)
    assert np.isfinite(np.asarray(pgd_attack(lf, w, x, y, key=jax.random.key(0)))).all()


@pytest.mark.parametrize(
    "make, message",
    [
        (
            lambda: __import__("jaxgrad").training.make_optimizer("adam", jnp.array(-1e-3)),
            "learning_rate",
        ),
        (
            lambda: __import__("jaxgrad").training.make_optimizer("adam", float("nan")),
            "learning_rate",
        ),
    ],
)
def test_a_negative_or_nan_learning_rate_is_refused_whatever_its_type(make, message):
    with pytest.raises(ValueError, match=f"{message} must be a finite number"):
        make()


def test_smoothgrad_and_trace_sigma_refuse_zero_d_arrays_out_of_range():
    from jaxgrad.attribution import smoothgrad
    from jaxgrad.trace_estimators import hessian_trace_taylor

    lf = lambda p, x: x.reshape(len(x), -1) @ p  # noqa: E731
    w = jnp.ones((4, 3))
    x, y = jnp.ones((2, 2, 2, 1)), jnp.array([0, 1])
    with pytest.raises(ValueError, match="noise_level must be a finite number in"):
        smoothgrad(lf, w, x, y, key=jax.random.key(0), noise_level=jnp.array(-0.1))
    f = lambda z: jnp.sum(z**2, axis=(1, 2, 3))  # noqa: E731
    with pytest.raises(ValueError, match="sigma must be a finite number in"):
        hessian_trace_taylor(f, x, key=jax.random.key(0), sigma=jnp.array(0.0))
