"""Jacobian matching and distillation against closed forms and the noise equivalence."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgrad import distillation_loss, jacobian_matching_loss, noisy_distillation_loss
from jaxgrad.gradients import input_gradients


def linear(a, x):
    return x @ a.T  # [B, D] -> [B, K]: the Jacobian of output k is row a[k]


@pytest.fixture
def pair():
    r = np.random.default_rng(0)
    return (
        jnp.asarray(r.normal(size=(3, 5)), jnp.float32),
        jnp.asarray(r.normal(size=(3, 5)), jnp.float32),
        jnp.asarray(r.normal(size=(4, 5)), jnp.float32),
    )


def test_linear_teacher_and_student_closed_form(pair):
    a_t, a_s, x = pair
    t = jnp.array([0, 2, 1, 2])
    unit = lambda v: v / np.linalg.norm(v, axis=-1, keepdims=True)  # noqa: E731
    expected = np.sum((unit(a_s) - unit(a_t)) ** 2, axis=1)[np.asarray(t)]
    got = jacobian_matching_loss(linear, a_s, linear, a_t, x, t)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    # Every output: the sum over rows; raw: the squared Frobenius distance of the Jacobians.
    all_rows = jacobian_matching_loss(linear, a_s, linear, a_t, x, output="all")
    np.testing.assert_allclose(
        all_rows, np.full(4, np.sum((unit(a_s) - unit(a_t)) ** 2)), rtol=1e-5
    )
    raw = jacobian_matching_loss(linear, a_s, linear, a_t, x, output="all", normalize=False)
    np.testing.assert_allclose(raw, np.full(4, np.sum((a_s - a_t) ** 2)), rtol=1e-5)
    # None matches the teacher's predicted class.
    pred = jnp.argmax(linear(a_t, x), -1)
    np.testing.assert_allclose(
        jacobian_matching_loss(linear, a_s, linear, a_t, x, None),
        jacobian_matching_loss(linear, a_s, linear, a_t, x, pred),
    )


def mlp(p, x):
    return jnp.tanh(x @ p["w1"] + p["b1"][None]) @ p["w2"]


def relu_mlp(p, x):
    return jax.nn.relu(x @ p["w1"] + p["b1"][None]) @ p["w2"]


def init(seed, d=5, h=16, k=3, dtype=jnp.float32):
    r = np.random.default_rng(seed)
    return {
        "w1": jnp.asarray(r.normal(size=(d, h)) / np.sqrt(d), dtype),
        "b1": jnp.asarray(r.normal(size=h) * 0.5, dtype),
        "w2": jnp.asarray(r.normal(size=(h, k)) / np.sqrt(h), dtype),
    }


def test_invariant_to_the_teachers_scale_and_differentiable_in_the_student_only():
    teacher, student = init(1), init(2)
    x = jnp.asarray(np.random.default_rng(3).normal(size=(6, 5)), jnp.float32)
    t = jnp.array([0, 1, 2, 0, 1, 2])
    base = jacobian_matching_loss(mlp, student, mlp, teacher, x, t)
    scaled = {**teacher, "w2": 7.5 * teacher["w2"]}  # every logit times 7.5
    np.testing.assert_allclose(
        jacobian_matching_loss(mlp, student, mlp, scaled, x, t), base, rtol=1e-5
    )
    assert float(base.min()) > 1e-3
    # The student matched to the teacher: zero penalty, whatever the student's scale.
    same = {**teacher, "w2": 0.2 * teacher["w2"]}
    np.testing.assert_allclose(jacobian_matching_loss(mlp, same, mlp, teacher, x, t), 0, atol=1e-10)

    def total(s, tp):
        return jnp.sum(jacobian_matching_loss(mlp, s, mlp, tp, x, t))

    g_student, g_teacher = jax.grad(total, argnums=(0, 1))(student, teacher)
    assert all(float(jnp.abs(v).max()) > 0 for v in jax.tree.leaves(g_student))
    assert all(float(jnp.abs(v).max()) == 0 for v in jax.tree.leaves(g_teacher))
    # Finite differences agree with the gradient in the student's params.
    eps, direction = 1e-3, jax.tree.map(jnp.ones_like, student)
    plus = total(jax.tree.map(lambda a, d: a + eps * d, student, direction), teacher)
    minus = total(jax.tree.map(lambda a, d: a - eps * d, student, direction), teacher)
    directional = sum(jnp.sum(g) for g in jax.tree.leaves(g_student))
    np.testing.assert_allclose((plus - minus) / (2 * eps), directional, rtol=2e-2)


def second_order_coefficient(fn, teacher, student, x):
    """||J_T - J_S||_F^2 + sum_k (T_k - S_k) tr(H_T_k - H_S_k), per example."""
    diff = fn(teacher, x) - fn(student, x)
    jac = jacobian_matching_loss(fn, student, fn, teacher, x, output="all", normalize=False)

    def hess_trace(p, k, xb):
        return jnp.trace(jax.hessian(lambda z: fn(p, z[None])[0, k])(xb))

    hess = jnp.stack(
        [
            jnp.stack([hess_trace(teacher, k, xb) - hess_trace(student, k, xb) for k in range(3)])
            for xb in x
        ]
    )
    return jac + jnp.sum(diff * hess, axis=1), jac


@pytest.mark.parametrize("fn", [relu_mlp, mlp], ids=["relu", "tanh"])
def test_noisy_distillation_is_output_plus_sigma_squared_jacobian_matching(fn, x64):
    # float64: at sigma = 3e-3 the sigma^2 term is 1e-5 of the output error.
    teacher, student = init(4, dtype=jnp.float64), init(5, dtype=jnp.float64)
    x = jnp.asarray(np.random.default_rng(6).normal(size=(3, 5)), jnp.float64)
    out = distillation_loss(fn(student, x), fn(teacher, x), kind="squared")
    coefficient, jac = second_order_coefficient(fn, teacher, student, x)
    for i, sigma in enumerate((1e-2, 3e-3)):
        noisy = noisy_distillation_loss(
            fn,
            student,
            fn,
            teacher,
            x,
            key=jax.random.key(7 + i),
            sigma=sigma,
            num_samples=20000,
            antithetic=True,
            chunk_size=5000,
        )
        ratio = (noisy - out) / sigma**2
        # Monte-Carlo error of a quadratic form at 20k antithetic pairs: about 1-2%.
        np.testing.assert_allclose(ratio, coefficient, rtol=0.05)


def test_distillation_losses_closed_forms_and_errors():
    s = jnp.array([[1.0, 2.0, 0.0]])
    t = jnp.array([[0.0, 2.0, 1.0]])
    np.testing.assert_allclose(distillation_loss(s, t, kind="squared"), [2.0])
    p_t, p_s = jax.nn.softmax(t / 2.0), jax.nn.softmax(s / 2.0)
    kl = 4.0 * jnp.sum(p_t * (jnp.log(p_t) - jnp.log(p_s)))
    np.testing.assert_allclose(distillation_loss(s, t, temperature=2.0), [kl], rtol=1e-6)
    np.testing.assert_allclose(distillation_loss(t, t), [0.0], atol=1e-7)
    with pytest.raises(ValueError, match="kind"):
        distillation_loss(s, t, kind="mse")
    with pytest.raises(ValueError, match="one shape"):
        distillation_loss(s, t[:, :2])
    x = jnp.ones((2, 5))
    with pytest.raises(ValueError, match="same outputs: student K = 2, teacher K = 3"):
        jacobian_matching_loss(lambda p, z: z[:, :2], None, mlp, init(1), x, 0)
    with pytest.raises(ValueError, match="output"):
        jacobian_matching_loss(mlp, init(1), mlp, init(2), x, 0, output="top")
    with pytest.raises(ValueError, match="key"):
        noisy_distillation_loss(mlp, init(1), mlp, init(2), x, key=None, sigma=0.1)


def test_input_gradient_view_matches_the_raw_target_penalty():
    teacher, student = init(8), init(9)
    x = jnp.asarray(np.random.default_rng(10).normal(size=(4, 5)), jnp.float32)
    t = jnp.array([2, 0, 1, 1])
    g = input_gradients(mlp, student, x, t) - input_gradients(mlp, teacher, x, t)
    np.testing.assert_allclose(
        jacobian_matching_loss(mlp, student, mlp, teacher, x, t, normalize=False),
        jnp.sum(g**2, axis=1),
        rtol=1e-5,
    )


def test_normalised_penalty_has_finite_gradients_where_an_input_gradient_vanishes():
    teacher, student = init(11), init(12)
    student = {**student, "w2": jnp.zeros_like(student["w2"])}  # a head started at zero
    x = jnp.asarray(np.random.default_rng(13).normal(size=(3, 5)), jnp.float32)
    loss = lambda s: jnp.sum(jacobian_matching_loss(mlp, s, mlp, teacher, x, 0))  # noqa: E731
    grads = jax.grad(loss)(student)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
    np.testing.assert_allclose(loss(student), 3.0, rtol=1e-5)  # |0 - unit|^2 = 1 per example
