"""Estimators of the input Hessian's trace, ``trace(grad_x^2 f_b(x_b))``, per example.

Score matching (:mod:`jaxgrad.score_matching`) needs the trace of the Hessian of a
log-density; this module gives three estimators of ``trace(H_b)`` for a per-example function
``f: [B, *S] -> [B]`` (examples independent):

* :func:`hessian_trace_exact`: all ``D = prod(S)`` basis directions (D Hessian-vector
  products, evaluated ``chunk_size`` at a time). Cost linear in ``D``; zero variance.
* :func:`hessian_trace_hutchinson`: ``v^T H v`` averaged over random probes ``v``
  (Hutchinson 1989), with forward-over-reverse (``jvp`` of ``grad``, the default) or
  reverse-over-reverse (``vjp``) products.
* :func:`hessian_trace_taylor`: the paper's forward-only estimate
  ``(2 / sigma^2) E[f(x + v) - f(x)]``, ``v ~ N(0, sigma^2 I)`` (Eq. 3): no backward pass,
  one extra forward per sample; and its antithetic variant.

:func:`hessian_trace` takes a classifier in the common form ``(logit_fn, params, x, target)``
and gives the trace of ``grad_x^2 f_target(x)``, which is also the Hessian trace of the
implicit ``log p(x | target)`` (``log Z`` does not depend on ``x``).

All three share one signature, ``estimator(f, x, *, key, **options) -> [B]`` (``key`` is
unused by the exact one), so a loss takes an estimator as a callable with its options bound:
``functools.partial(hessian_trace_taylor, sigma=1e-3)``. Every estimator returns ``[B]``,
unreduced, and is jit-, vmap- and grad-compatible (the losses are differentiated with
respect to model parameters: double backprop).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxgrad import _random
from jaxgrad._chunking import chunked_vmap
from jaxgrad._validation import (
    BOOL,
    CALLABLE,
    LOGIT_FN,
    OPTIONAL_KEY,
    OPTIONAL_POSITIVE_INT,
    POSITIVE,
    POSITIVE_INT,
    check_choice,
    check_number,
    check_positive_int,
    check_target,
    check_x,
    checked,
    one_of,
)
from jaxgrad.gradients import select_logits
from jaxgrad.types import ArrayLike, LogitFn, Params

PerExampleFn = Callable[[jax.Array], jax.Array]
# estimator(f, x, *, key) -> [B], options bound with functools.partial.
TraceEstimator = Callable[..., jax.Array]

PRODUCTS = ("jvp", "vjp")
DISTRIBUTIONS = ("rademacher", "gaussian")


def grad_sum(f: PerExampleFn) -> PerExampleFn:
    """``x -> grad_x sum_b f(x)_b``: every example's gradient at once (examples independent)."""

    def total(z):
        return jnp.sum(check_per_example(f(z), z))

    return jax.grad(total)


def check_per_example(out, x):
    """Refuses an ``f`` that returns more than one value per example (e.g. logits ``[B, K]``)."""
    if jnp.ndim(out) > 1 or (
        jnp.ndim(out) == 1 and jnp.ndim(x) >= 1 and out.shape[0] != x.shape[0]
    ):
        raise ValueError(
            f"f must return one value per example, [B] = {tuple(jnp.shape(x)[:1])}, got shape "
            f"{tuple(jnp.shape(out))}; for logits, pick the class: e.g. lambda z: "
            "jaxgrad.log_density(logit_fn, params, z, target)"
        )
    return out


def check_key(key, name: str) -> None:
    """A stochastic estimator needs a key: a named error instead of JAX's PRNG type error."""
    if key is None:
        raise ValueError(f"{name} is stochastic: pass key= (a jax.random.key)")


def takes_f_x(estimator: TraceEstimator) -> bool:
    """Whether ``estimator`` accepts ``f_x=`` (``f(x)`` computed by the caller already)."""
    try:
        return "f_x" in inspect.signature(estimator).parameters
    except (TypeError, ValueError):  # builtins and some callables have no signature
        return False


@checked(f=CALLABLE, chunk_size=OPTIONAL_POSITIVE_INT)
def hessian_trace_exact(
    f: PerExampleFn, x: ArrayLike, *, key: jax.Array | None = None, chunk_size: int | None = None
) -> jax.Array:
    """Exact ``trace(grad_x^2 f_b(x_b))`` for every example, from all basis directions.

    Computes ``e_i^T H e_i`` for the ``D = prod(S)`` basis vectors ``e_i`` (the same
    direction for every example at once, since examples are independent) with
    forward-over-reverse Hessian-vector products. Time is linear in ``D``; memory is that of
    ``chunk_size`` products (all ``D`` at once when None). Zero variance: the reference the
    stochastic estimators are tested against.

    Args:
      f: ``[B, *S] -> [B]``, examples independent.
      x: ``[B, *S]`` float.
      key: unused (deterministic; accepted for the estimators' common signature).
      chunk_size: basis directions evaluated together (static).

    Returns:
      ``[B]``.

    Example:
      >>> f = lambda x: -0.5 * jnp.sum(x**2, axis=-1) * 3.0
      >>> hessian_trace_exact(f, jnp.ones((2, 4))).tolist()
      [-12.0, -12.0]
    """
    del key
    x = check_x(x)
    b, shape = x.shape[0], x.shape[1:]
    d = math.prod(shape)
    grad_f = grad_sum(f)

    def diag_entry(i):
        e = jnp.zeros((d,), x.dtype).at[i].set(1).reshape(shape)
        hv = jax.jvp(grad_f, (x,), (jnp.broadcast_to(e, x.shape),))[1]
        return hv.reshape(b, d)[:, i]

    return jnp.sum(chunked_vmap(diag_entry, jnp.arange(d), chunk_size), axis=0)


def _probes(key: jax.Array, shape: tuple[int, ...], dtype, distribution: str) -> jax.Array:
    if distribution == "rademacher":
        return _random.rademacher(key, shape, dtype)
    return _random.normal(key, shape, dtype)


@checked(
    f=CALLABLE,
    key=OPTIONAL_KEY,
    num_probes=POSITIVE_INT,
    distribution=one_of(*DISTRIBUTIONS),
    product=one_of(*PRODUCTS),
    chunk_size=OPTIONAL_POSITIVE_INT,
)
def hessian_trace_hutchinson(
    f: PerExampleFn,
    x: ArrayLike,
    *,
    key: jax.Array,
    num_probes: int = 1,
    distribution: str = "rademacher",
    product: str = "jvp",
    chunk_size: int | None = None,
) -> jax.Array:
    """Hutchinson's stochastic trace ``mean_p v_p^T H v_p`` for every example.

    Each probe costs one Hessian-vector product: ``product="jvp"`` (forward-over-reverse, the
    default, about the cost of two gradients) or ``"vjp"`` (reverse-over-reverse,
    ``grad_x (grad_x f . v)``, as Pearlmutter's trick is written in PyTorch).

    Variance of one probe (``H`` symmetric): Rademacher ``2 sum_{i != j} H_ij^2``; Gaussian
    ``2 ||H||_F^2``. Both are unbiased; the mean over ``num_probes`` divides the variance by
    ``num_probes``. Rademacher is exact for a diagonal Hessian.

    Args:
      f: ``[B, *S] -> [B]``, examples independent.
      x: ``[B, *S]`` float.
      key: PRNG key for the probes (consumed).
      num_probes: probes per example (static).
      distribution: ``"rademacher"`` or ``"gaussian"``.
      product: how Hessian-vector products are formed, ``"jvp"`` or ``"vjp"``.
      chunk_size: probes evaluated together (static); all at once when None.

    Returns:
      ``[B]``.
    """
    check_key(key, "hessian_trace_hutchinson")
    x = check_x(x)
    check_positive_int(num_probes, "num_probes")
    check_choice(product, PRODUCTS, "product")
    check_choice(distribution, DISTRIBUTIONS, "distribution")
    grad_f = grad_sum(f)
    axes = tuple(range(1, x.ndim))

    def quad_form(k):
        v = _probes(k, x.shape, x.dtype, distribution)
        if product == "jvp":
            hv = jax.jvp(grad_f, (x,), (v,))[1]
        else:
            hv = jax.grad(lambda z: jnp.sum(grad_f(z) * v))(x)
        return jnp.sum(v * hv, axis=axes)

    keys = jax.random.split(key, num_probes)
    return jnp.mean(chunked_vmap(quad_form, keys, chunk_size), axis=0)


@checked(
    f=CALLABLE,
    key=OPTIONAL_KEY,
    sigma=POSITIVE,
    num_samples=POSITIVE_INT,
    chunk_size=OPTIONAL_POSITIVE_INT,
    antithetic=BOOL,
)
def hessian_trace_taylor(
    f: PerExampleFn,
    x: ArrayLike,
    *,
    key: jax.Array,
    sigma: ArrayLike = 0.01,
    num_samples: int = 1,
    antithetic: bool = False,
    chunk_size: int | None = None,
    f_x: jax.Array | None = None,
) -> jax.Array:
    """The score-matching paper's forward-only trace estimate (Srinivas & Fleuret 2021, Eq. 3).

    ``h(x) = (2 / sigma^2) mean_s [f(x + v_s) - f(x)]`` with ``v_s ~ N(0, sigma^2 I)``; its
    expectation is ``trace(H) + O(sigma^2)`` (exact for a quadratic). With
    ``antithetic=True``: ``mean_s [f(x + v_s) + f(x - v_s) - 2 f(x)] / sigma^2``, the same
    expectation with the linear term cancelled exactly.

    Variance of one sample, to leading order in ``sigma`` (exact for a quadratic, ``g`` the
    gradient): plain ``4 ||g||^2 / sigma^2 + 2 ||H||_F^2``, dominated by the dropped linear
    term when ``sigma`` is small (sigma = 0.01 multiplies ``||g||^2`` by 4e4); antithetic
    ``2 ||H||_F^2``. Averaging ``num_samples`` divides either by ``num_samples``.

    Two cautions. (1) Rounding: ``f(x + v) - f(x)`` cancels, so float32 rounding of ``f`` is
    multiplied by ``2 / sigma^2`` (2e4 at sigma = 0.01): about ``2e4 * 1e-7 * |f|``.
    (2) Kinks: for a piecewise-smooth network (ReLU, max-pooling) the finite difference
    sees the gradient jumps that the autodiff Hessian (:func:`hessian_trace_exact`,
    Hutchinson) ignores; their contribution grows like ``1 / sigma``, so the estimate does
    not converge to the autodiff trace as ``sigma -> 0``. Use smooth activations and
    average pooling (the paper's softplus ResNet) when comparing estimators.

    Args:
      f: ``[B, *S] -> [B]``, examples independent.
      x: ``[B, *S]`` float.
      key: PRNG key for the noise (consumed).
      sigma: noise std (traced: changing it does not recompile).
      num_samples: noise samples per example (static).
      antithetic: use ``v`` and ``-v`` in pairs.
      chunk_size: samples evaluated together (static); all at once when None.
      f_x: ``f(x)`` if the caller has it already (saves one forward pass).

    Returns:
      ``[B]``.
    """
    check_key(key, "hessian_trace_taylor")
    x = check_x(x)
    check_positive_int(num_samples, "num_samples")
    check_number(sigma, "sigma", low=0.0, low_open=True)
    sigma = jnp.asarray(sigma, x.dtype)
    f0 = check_per_example(f(x) if f_x is None else f_x, x)

    def one(k):
        v = sigma * _random.normal(k, x.shape, x.dtype)
        if antithetic:
            return (f(x + v) + f(x - v) - 2.0 * f0) / sigma**2
        return 2.0 * (f(x + v) - f0) / sigma**2

    keys = jax.random.split(key, num_samples)
    return jnp.mean(chunked_vmap(one, keys, chunk_size), axis=0)


@checked(logit_fn=LOGIT_FN, key=OPTIONAL_KEY, trace_estimator=CALLABLE)
def hessian_trace(
    logit_fn: LogitFn,
    params: Params,
    x: ArrayLike,
    target: ArrayLike,
    *,
    trace_estimator: TraceEstimator = hessian_trace_exact,
    key: jax.Array | None = None,
) -> jax.Array:
    """``trace(grad_x^2 f_target(x))`` per example, for a classifier in the common form.

    The Hessian trace of the raw logit of ``target``, equal to that of the implicit
    log-density ``log p(x | target) = f_target(x) - log Z`` (Srinivas & Fleuret 2021).

    Args:
      logit_fn: ``(params, x [B, *S]) -> logits [B, K]``, examples independent.
      params: the model's params.
      x: ``[B, *S]``.
      target: ``int[B]`` or one int.
      trace_estimator: ``(f, x, *, key) -> [B]`` with its options bound, e.g.
        ``functools.partial(hessian_trace_hutchinson, num_probes=64)``; exact by default.
      key: PRNG key for a stochastic estimator.

    Returns:
      ``[B]``.

    Example:
      >>> import jax.numpy as jnp
      >>> quadratic = lambda p, x: jnp.stack([-jnp.sum(p * x**2, axis=1), jnp.sum(x, axis=1)], 1)
      >>> hessian_trace(quadratic, jnp.array([1.0, 2.0]), jnp.ones((3, 2)), 0).tolist()
      [-6.0, -6.0, -6.0]
    """
    x = check_x(x)
    target = check_target(target, x.shape[0])

    def f(z):
        return select_logits(logit_fn(params, z), target)

    return trace_estimator(f, x, key=key)


__all__ = [
    "hessian_trace",
    "hessian_trace_exact",
    "hessian_trace_hutchinson",
    "hessian_trace_taylor",
]
