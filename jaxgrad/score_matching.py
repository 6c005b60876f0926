"""Hessian-trace estimators and the score-matching family of losses.

Score matching (Hyvärinen 2005) fits a density by minimising, over data,
``trace(grad_x^2 log p(x)) + 1/2 ||grad_x log p(x)||^2``. Applied to a classifier's implicit
class-conditional density ``log p(x | y) = f_y(x) - log Z`` it aligns the model's
logit-gradients with the data's score (Srinivas & Fleuret 2021, arXiv 2006.09128, Eq. 2-4).
The expensive part is the Hessian trace; this module gives three estimators of
``trace(H_b)`` for a per-example function ``f: [B, *S] -> [B]`` (examples independent):

* :func:`hessian_trace_exact`: all ``D = prod(S)`` basis directions (D Hessian-vector
  products, evaluated ``chunk_size`` at a time). Cost linear in ``D``; zero variance.
* :func:`hessian_trace_hutchinson`: ``v^T H v`` averaged over random probes ``v``
  (Hutchinson 1989), with forward-over-reverse (``jvp`` of ``grad``, the default) or
  reverse-over-reverse (``vjp``) products.
* :func:`hessian_trace_taylor`: the paper's forward-only estimate
  ``(2 / sigma^2) E[f(x + v) - f(x)]``, ``v ~ N(0, sigma^2 I)`` (Eq. 3): no backward pass,
  one extra forward per sample; and its antithetic variant.

Every estimator returns ``[B]``, unreduced, and is jit-, vmap- and grad-compatible (the
losses are differentiated with respect to model parameters: double backprop).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxgrad import _random
from jaxgrad._vmap import chunked_vmap
from jaxgrad.gradients import check_target, select_logits
from jaxgrad.types import ArrayLike, LogitFn, Params

PerExampleFn = Callable[[jax.Array], jax.Array]

ESTIMATORS = ("exact", "hutchinson", "taylor")


def _check_x(x: ArrayLike) -> jax.Array:
    x = jnp.asarray(x)
    if x.ndim < 2:
        raise ValueError(f"x must have a batch axis and features [B, *S], got shape {x.shape}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"x must be a floating-point array, got dtype {x.dtype}")
    return x


def _check_positive_int(value: int, name: str) -> None:
    if not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _grad_sum(f: PerExampleFn) -> PerExampleFn:
    return jax.grad(lambda z: jnp.sum(f(z)))


def hessian_trace_exact(
    f: PerExampleFn, x: ArrayLike, *, chunk_size: int | None = None
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
      chunk_size: basis directions evaluated together (static).

    Returns:
      ``[B]``.

    Example:
      >>> f = lambda x: -0.5 * jnp.sum(x**2, axis=-1) * 3.0
      >>> hessian_trace_exact(f, jnp.ones((2, 4))).tolist()
      [-12.0, -12.0]
    """
    x = _check_x(x)
    b, shape = x.shape[0], x.shape[1:]
    d = math.prod(shape)
    grad_f = _grad_sum(f)

    def diag_entry(i):
        e = jnp.zeros((d,), x.dtype).at[i].set(1).reshape(shape)
        hv = jax.jvp(grad_f, (x,), (jnp.broadcast_to(e, x.shape),))[1]
        return hv.reshape(b, d)[:, i]

    return jnp.sum(chunked_vmap(diag_entry, jnp.arange(d), chunk_size), axis=0)


def _probes(key: jax.Array, shape: tuple[int, ...], dtype, distribution: str) -> jax.Array:
    if distribution == "rademacher":
        return _random.rademacher(key, shape, dtype)
    if distribution == "gaussian":
        return _random.normal(key, shape, dtype)
    raise ValueError(f"distribution must be 'rademacher' or 'gaussian', got {distribution!r}")


def hessian_trace_hutchinson(
    f: PerExampleFn,
    x: ArrayLike,
    *,
    key: jax.Array,
    num_probes: int = 1,
    distribution: str = "rademacher",
    method: str = "jvp",
    chunk_size: int | None = None,
) -> jax.Array:
    """Hutchinson's stochastic trace ``mean_p v_p^T H v_p`` for every example.

    Each probe costs one Hessian-vector product: ``method="jvp"`` (forward-over-reverse, the
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
      method: ``"jvp"`` or ``"vjp"``.
      chunk_size: probes evaluated together (static); all at once when None.

    Returns:
      ``[B]``.
    """
    x = _check_x(x)
    _check_positive_int(num_probes, "num_probes")
    if method not in ("jvp", "vjp"):
        raise ValueError(f"method must be 'jvp' or 'vjp', got {method!r}")
    grad_f = _grad_sum(f)
    axes = tuple(range(1, x.ndim))

    def quad_form(k):
        v = _probes(k, x.shape, x.dtype, distribution)
        if method == "jvp":
            hv = jax.jvp(grad_f, (x,), (v,))[1]
        else:
            hv = jax.grad(lambda z: jnp.sum(grad_f(z) * v))(x)
        return jnp.sum(v * hv, axis=axes)

    keys = jax.random.split(key, num_probes)
    return jnp.mean(chunked_vmap(quad_form, keys, chunk_size), axis=0)


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
    x = _check_x(x)
    _check_positive_int(num_samples, "num_samples")
    if isinstance(sigma, (int, float)) and not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    sigma = jnp.asarray(sigma, x.dtype)
    f0 = f(x) if f_x is None else f_x

    def one(k):
        v = sigma * _random.normal(k, x.shape, x.dtype)
        if antithetic:
            return (f(x + v) + f(x - v) - 2.0 * f0) / sigma**2
        return 2.0 * (f(x + v) - f0) / sigma**2

    keys = jax.random.split(key, num_samples)
    return jnp.mean(chunked_vmap(one, keys, chunk_size), axis=0)


def hessian_trace(
    f: PerExampleFn,
    x: ArrayLike,
    *,
    estimator: str = "taylor",
    key: jax.Array | None = None,
    **kwargs: Any,
) -> jax.Array:
    """Dispatches to one of the estimators by name (``exact``, ``hutchinson``, ``taylor``).

    ``kwargs`` go to the chosen estimator (``chunk_size``, ``num_probes``, ``distribution``,
    ``method``, ``sigma``, ``num_samples``, ``antithetic``, ``f_x``).
    """
    if estimator == "exact":
        kwargs.pop("f_x", None)
        return hessian_trace_exact(f, x, **kwargs)
    if key is None:
        raise ValueError(f"the {estimator!r} estimator is stochastic: pass key=")
    if estimator == "hutchinson":
        kwargs.pop("f_x", None)
        return hessian_trace_hutchinson(f, x, key=key, **kwargs)
    if estimator == "taylor":
        return hessian_trace_taylor(f, x, key=key, **kwargs)
    raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")


def gradient_norm_regularizer(f: PerExampleFn, x: ArrayLike) -> jax.Array:
    """``1/2 ||grad_x f_b(x_b)||^2`` per example, ``[B]`` (the paper's gradient-norm baseline)."""
    x = _check_x(x)
    g = _grad_sum(f)(x)
    return 0.5 * jnp.sum(g**2, axis=tuple(range(1, x.ndim)))


def score_matching_loss(
    f: PerExampleFn,
    x: ArrayLike,
    *,
    estimator: str = "taylor",
    key: jax.Array | None = None,
    **kwargs: Any,
) -> jax.Array:
    """Hyvärinen's score-matching objective per example: ``trace(H) + 1/2 ||grad_x f||^2``.

    With ``f = log p_theta`` (up to a constant), its mean over data equals
    ``1/2 E ||grad log p_theta - grad log p_data||^2`` minus a constant (Eq. 1-2).

    Args:
      f: ``[B, *S] -> [B]``, the unnormalised log-density.
      x: ``[B, *S]`` data.
      estimator: ``"exact"``, ``"hutchinson"`` or ``"taylor"`` for the trace.
      key: PRNG key for the stochastic estimators.
      **kwargs: passed to the estimator.

    Returns:
      ``[B]``.
    """
    x = _check_x(x)
    return hessian_trace(f, x, estimator=estimator, key=key, **kwargs) + gradient_norm_regularizer(
        f, x
    )


def stability_regularizer(trace: ArrayLike) -> jax.Array:
    """The paper's stability term ``h(x)^2`` (Sec. 3.3) for trace estimates ``h``, ``[B]``.

    Naive score matching drives the trace to ``-inf`` (the finite-sample optimum is a mixture
    of Diracs at the data); penalising its square keeps it bounded.
    """
    return jnp.square(jnp.asarray(trace))


def anti_score_matching_loss(trace: ArrayLike, *, tau: ArrayLike = 1000.0) -> jax.Array:
    """``-min(h, tau)`` per example: maximise the trace until it reaches ``tau``.

    Args:
      trace: trace estimates ``h``, ``[B]``.
      tau: the threshold (paper 1000, authors' code 1e4).
    """
    return -jnp.minimum(jnp.asarray(trace), tau)


KINDS = ("none", "score_matching", "anti_score_matching", "gradient_norm")

# Hyper-parameters of Srinivas & Fleuret (2021): the paper's text and the authors' code
# (idiap/rethinking-saliency, train.py and example_scripts.sh), side by side.
PAPER_DEFAULTS = {
    "score_matching": dict(lam=1e-3, mu=1e-3, sigma=0.01, num_samples=1),
    "anti_score_matching": dict(lam=1e-4, tau=1000.0, sigma=0.01, num_samples=1),
    "gradient_norm": dict(lam=1e-3),
    "none": dict(lam=0.0),
}
CODE_DEFAULTS = {
    "score_matching": dict(lam=1e-5, mu=1e-3, sigma=0.01, num_samples=1),
    "anti_score_matching": dict(lam=1e-5, tau=1e4, sigma=0.001, num_samples=1),
    "gradient_norm": dict(lam=1e-5),
    "none": dict(lam=0.0),
}


def regularizer(
    logit_fn: LogitFn,
    params: Params,
    x: ArrayLike,
    target: ArrayLike,
    *,
    kind: str,
    mu: ArrayLike = 1e-3,
    tau: ArrayLike = 1000.0,
    sigma: ArrayLike = 0.01,
    key: jax.Array | None = None,
    estimator: str = "taylor",
    **kwargs: Any,
) -> jax.Array:
    """The regularizer of Eq. 4 alone, per example, on ``f = f_target`` (the raw target logit).

    * ``score_matching``: ``h + 1/2 ||grad_x f||^2 + mu h^2``
    * ``anti_score_matching``: ``-min(h, tau)``
    * ``gradient_norm``: ``1/2 ||grad_x f||^2``
    * ``none``: 0

    ``h`` is the Hessian trace from ``estimator`` (the paper's ``taylor`` by default, with
    ``sigma`` and ``num_samples``; ``hutchinson`` or ``exact`` on request).

    Returns:
      ``[B]``.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    x = _check_x(x)
    check_target(target, x.shape[0])
    if kind == "none":
        return jnp.zeros(x.shape[:1], x.dtype)

    def f(z):
        return select_logits(logit_fn(params, z), target)

    if kind == "gradient_norm":
        return gradient_norm_regularizer(f, x)
    if estimator == "taylor":
        kwargs["sigma"] = sigma
    else:
        kwargs.pop("num_samples", None)
    if kind == "anti_score_matching":
        h = hessian_trace(f, x, estimator=estimator, key=key, **kwargs)
        return anti_score_matching_loss(h, tau=tau)
    # One forward pass gives f(x) for the Taylor estimate and, with its vjp, the gradient.
    f_x, f_vjp = jax.vjp(f, x)
    (g,) = f_vjp(jnp.ones_like(f_x))
    h = hessian_trace(f, x, estimator=estimator, key=key, f_x=f_x, **kwargs)
    grad_term = 0.5 * jnp.sum(g**2, axis=tuple(range(1, x.ndim)))
    return h + grad_term + mu * stability_regularizer(h)


def regularized_loss(
    logit_fn: LogitFn,
    params: Params,
    x: ArrayLike,
    y: ArrayLike,
    *,
    kind: str,
    lam: ArrayLike | None = None,
    mu: ArrayLike | None = None,
    tau: ArrayLike | None = None,
    sigma: ArrayLike | None = None,
    key: jax.Array | None = None,
    estimator: str = "taylor",
    **kwargs: Any,
) -> jax.Array:
    """Cross-entropy plus ``lam`` times a regularizer, per example (Srinivas & Fleuret 2021, Eq. 4).

    ``l_reg = CE(f(x), y) + lam * R(x, y)`` with ``R`` from :func:`regularizer` on the raw
    logit of the label ``y``. Differentiable with respect to ``params`` (the gradient term is
    differentiated twice: double backprop). Hyper-parameters left as None take the paper's
    values (``PAPER_DEFAULTS``); the authors' code used others (``CODE_DEFAULTS``):

    ============================  =======================  ===========================
    kind                          paper                    authors' code
    ============================  =======================  ===========================
    score_matching                lam 1e-3, mu 1e-3        lam 1e-5, mu 1e-3, sigma 0.01
    anti_score_matching           lam 1e-4, tau 1e3        lam 1e-5, tau 1e4, sigma 1e-3
    gradient_norm                 lam 1e-3                 lam 1e-5
    ============================  =======================  ===========================

    Both use one Taylor sample (``num_samples=1``). The paper does not state ``sigma``;
    0.01 is the code's value for score matching.

    Args:
      logit_fn: ``(params, x [B, *S]) -> logits [B, K]``.
      params: the model's params.
      x: ``[B, *S]`` inputs.
      y: ``[B]`` int labels (the regularized logit is the label's).
      kind: ``none``, ``score_matching``, ``anti_score_matching`` or ``gradient_norm``.
      lam, mu, tau, sigma: see above (traced).
      key: PRNG key for the trace estimator (needed by the two score-matching kinds).
      estimator: trace estimator by name.
      **kwargs: more estimator options (``num_samples``, ``num_probes``, ``chunk_size``, ...).

    Returns:
      ``[B]``.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    defaults = PAPER_DEFAULTS[kind]
    lam = defaults["lam"] if lam is None else lam
    hyper = {"mu": mu, "tau": tau, "sigma": sigma}
    hyper = {k: (defaults.get(k, v) if v is None else v) for k, v in hyper.items()}
    hyper = {k: v for k, v in hyper.items() if v is not None}
    if estimator == "taylor" and "num_samples" not in kwargs and "num_samples" in defaults:
        kwargs["num_samples"] = defaults["num_samples"]
    x = _check_x(x)
    logits = logit_fn(params, x)
    ce = -select_logits(jax.nn.log_softmax(logits, axis=-1), y)
    if kind == "none":
        return ce
    reg = regularizer(
        logit_fn, params, x, y, kind=kind, key=key, estimator=estimator, **hyper, **kwargs
    )
    return ce + lam * reg
