"""Distillation and Jacobian matching (Srinivas & Fleuret 2018, arXiv 1803.00443).

A student ``S`` learns from a teacher ``T`` by matching outputs (distillation) and, with
Jacobian matching, their input-gradients. The paper's link between the two: for Gaussian
input noise ``xi ~ N(0, sigma^2 I)``,

    E ||T(x + xi) - S(x + xi)||^2 = ||T(x) - S(x)||^2
                                    + sigma^2 [ ||J_T(x) - J_S(x)||_F^2
                                               + sum_k (T_k - S_k)(x) tr(H_{T_k} - H_{S_k})(x) ]
                                    + O(sigma^4),

so squared-error distillation under input noise is output matching plus ``sigma^2`` times
(raw, all-output) Jacobian matching, to second order when the outputs already match or the
networks are linear around ``x`` (piecewise-linear networks farther than about ``sigma`` from
a kink): the Hessian term vanishes, which is the paper's first-order statement.

As commonly implemented (e.g. Knowledge-Distillation-Zoo's ``sobolev.py``; our sources do not
confirm the paper's exact choice), the input-gradient of one output (the target class) is
matched, each l2-normalised per example:

    ||grad_x T_y / ||grad_x T_y||_2 - grad_x S_y / ||grad_x S_y||_2||_2^2.

Every loss returns ``[B]``, unreduced, and holds the teacher fixed (``stop_gradient``), so it
is differentiated with respect to the student's params only.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxgrad import _random
from jaxgrad._chunking import chunked_vmap
from jaxgrad._second_order import second_order
from jaxgrad._validation import (
    BOOL,
    KEY,
    LOGIT_FN,
    OPTIONAL_POSITIVE_INT,
    POSITIVE,
    POSITIVE_INT,
    check_choice,
    check_positive_int,
    check_target,
    check_x,
    checked,
)
from jaxgrad.gradients import input_gradients
from jaxgrad.types import ArrayLike, LogitFn, Params

OUTPUTS = ("target", "all")
DISTILLATION_KINDS = ("squared", "kl")


def _flat_normalised(g: jax.Array, normalize: bool, eps: float) -> jax.Array:
    g = g.reshape(g.shape[0], -1)
    if not normalize:
        return g
    # rsqrt(|g|^2 + eps^2), not g / (|g| + eps): the norm's derivative at g = 0 is NaN.
    return g * jax.lax.rsqrt(jnp.sum(g**2, axis=1, keepdims=True) + eps**2)


@checked(student_logit_fn=LOGIT_FN, teacher_logit_fn=LOGIT_FN, eps=POSITIVE)
def jacobian_matching_loss(
    student_logit_fn: LogitFn,
    student_params: Params,
    teacher_logit_fn: LogitFn,
    teacher_params: Params,
    x: ArrayLike,
    target: ArrayLike | None = None,
    *,
    output: str = "target",
    normalize: bool = True,
    eps: float = 1e-12,
) -> jax.Array:
    """The Jacobian-matching penalty per example, ``[B]``.

    Args:
      student_logit_fn, student_params: the student, ``(params, x) -> [B, K]`` (differentiated).
      teacher_logit_fn, teacher_params: the teacher (held fixed), ``K`` outputs too.
      x: ``[B, *S]``.
      target: ``int[B]`` or one int, the output whose input-gradients are matched
        (``output="target"``); None takes the teacher's predicted class.
      output: ``"target"`` (one output, as commonly implemented) or ``"all"`` (every output,
        the full Jacobian: the sum of the per-output penalties, K backward passes).
      normalize: l2-normalise each input-gradient per example before the difference;
        without it the penalty is ``||J_T - J_S||^2`` of the raw gradients (the form of the
        noise equivalence).
      eps: added to the norms.

    Returns:
      ``sum over the matched outputs of ||g_T - g_S||_2^2`` per example.

    Example:
      >>> A = jnp.array([[1.0, 0.0], [0.0, 2.0]])
      >>> lin = lambda p, x: x @ p.T
      >>> jacobian_matching_loss(lin, 3.0 * A, lin, A, jnp.ones((1, 2)), 1).tolist()  # scale
      [0.0]
    """
    check_choice(output, OUTPUTS, "output")
    x = check_x(x)
    num_classes = jax.eval_shape(teacher_logit_fn, teacher_params, x).shape[-1]
    student_classes = jax.eval_shape(student_logit_fn, student_params, x).shape[-1]
    if student_classes != num_classes:
        raise ValueError(
            f"student and teacher must have the same outputs: student K = {student_classes}, "
            f"teacher K = {num_classes}"
        )
    teacher_params = jax.lax.stop_gradient(teacher_params)

    def penalty(t):
        g_t = input_gradients(teacher_logit_fn, teacher_params, x, t)
        with second_order():  # the student's input-gradient is differentiated again
            g_s = input_gradients(student_logit_fn, student_params, x, t)
        d = _flat_normalised(g_s, normalize, eps) - jax.lax.stop_gradient(
            _flat_normalised(g_t, normalize, eps)
        )
        return jnp.sum(d**2, axis=1)

    if output == "all":
        classes = jnp.broadcast_to(jnp.arange(num_classes)[:, None], (num_classes, x.shape[0]))
        return jnp.sum(jax.vmap(penalty)(classes), axis=0)
    if target is None:
        target = jnp.argmax(jax.lax.stop_gradient(teacher_logit_fn(teacher_params, x)), -1)
    return penalty(check_target(target, x.shape[0], num_classes))


@checked(temperature=POSITIVE)
def distillation_loss(
    student_logits: ArrayLike,
    teacher_logits: ArrayLike,
    *,
    kind: str = "kl",
    temperature: ArrayLike = 1.0,
) -> jax.Array:
    """Output matching per example, ``[B]``, with the teacher held fixed.

    * ``kind="kl"`` (Hinton et al. 2015): ``temperature^2 KL(softmax(T / temperature) ||
      softmax(S / temperature))``; the ``temperature^2`` keeps its gradients' scale.
    * ``kind="squared"``: ``||T - S||^2`` on the logits, the loss of the noise equivalence.

    Args:
      student_logits, teacher_logits: ``[B, K]``.
      kind: one of ``"kl"``, ``"squared"``.
      temperature: the softening temperature of ``"kl"`` (traced).
    """
    check_choice(kind, DISTILLATION_KINDS, "kind")
    s = jnp.asarray(student_logits)
    t = jax.lax.stop_gradient(jnp.asarray(teacher_logits))
    if s.ndim != 2 or s.shape != t.shape:
        raise ValueError(
            f"student_logits and teacher_logits must have one shape [B, K], got {s.shape} and "
            f"{t.shape}"
        )
    if kind == "squared":
        return jnp.sum((t - s) ** 2, axis=1)
    log_p_t = jax.nn.log_softmax(t / temperature, axis=1)
    log_p_s = jax.nn.log_softmax(s / temperature, axis=1)
    return temperature**2 * jnp.sum(jnp.exp(log_p_t) * (log_p_t - log_p_s), axis=1)


@checked(
    student_logit_fn=LOGIT_FN,
    teacher_logit_fn=LOGIT_FN,
    key=KEY,
    sigma=POSITIVE,
    num_samples=POSITIVE_INT,
    chunk_size=OPTIONAL_POSITIVE_INT,
    antithetic=BOOL,
)
def noisy_distillation_loss(
    student_logit_fn: LogitFn,
    student_params: Params,
    teacher_logit_fn: LogitFn,
    teacher_params: Params,
    x: ArrayLike,
    *,
    key: jax.Array,
    sigma: ArrayLike,
    num_samples: int = 1,
    antithetic: bool = False,
    chunk_size: int | None = None,
) -> jax.Array:
    """Squared-error distillation under Gaussian input noise, ``E ||T(x + xi) - S(x + xi)||^2``.

    A Monte-Carlo mean over ``num_samples`` draws of ``xi ~ N(0, sigma^2 I)`` (with
    ``antithetic``, ``num_samples`` pairs ``xi, -xi``, which cancels the first-order term of
    the expansion exactly). To second order in ``sigma`` it is output matching plus
    ``sigma^2`` Jacobian matching (see the module's docstring).

    Args:
      student_logit_fn, student_params, teacher_logit_fn, teacher_params: as for
        :func:`jacobian_matching_loss`.
      x: ``[B, *S]``.
      key: PRNG key for the noise.
      sigma: the noise std (traced).
      num_samples: draws (static).
      antithetic: use each draw and its negation.
      chunk_size: draws evaluated together (static; all at once when None).

    Returns:
      ``[B]``.
    """
    x = check_x(x)
    num_samples = check_positive_int(num_samples, "num_samples")
    if key is None:
        raise ValueError("noisy_distillation_loss is stochastic: pass key= (a jax.random.key)")
    teacher_params = jax.lax.stop_gradient(teacher_params)

    def err(z):
        return distillation_loss(
            student_logit_fn(student_params, z), teacher_logit_fn(teacher_params, z), kind="squared"
        )

    def one(k):
        v = sigma * _random.normal(k, x.shape, x.dtype)
        if antithetic:
            return 0.5 * (err(x + v) + err(x - v))
        return err(x + v)

    keys = jax.random.split(key, num_samples)
    return jnp.mean(chunked_vmap(one, keys, chunk_size), axis=0)


__all__ = [
    "distillation_loss",
    "jacobian_matching_loss",
    "noisy_distillation_loss",
]
