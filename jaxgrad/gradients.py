"""Selected logits and input-gradients of a classifier ``logit_fn(params, x) -> [B, K]``.

Because examples do not interact in evaluation mode, one reverse pass of the summed selected
logits gives every example's gradient at once (as in score_sde).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxgrad._validation import (
    CALLABLE,
    LOGIT_FN,
    NONNEGATIVE,
    POSITIVE,
    check_finite,
    check_target,
    check_x,
    checked,
    integer,
)
from jaxgrad.types import ArrayLike, LogitFn, Params, TappedLogitFn


def select_logits(logits: ArrayLike, target: ArrayLike) -> jax.Array:
    """``logits[b, target[b]]`` for each example.

    Args:
      logits: ``[B, K]`` float.
      target: ``[B]`` int in ``[0, K)``: checked when concrete; under ``jit`` a target
        out of range gives NaN for its row (and a NaN gradient), not a plausible value.

    Returns:
      ``[B]``.

    Example:
      >>> select_logits(jnp.array([[1., 2.], [3., 4.]]), jnp.array([1, 0])).tolist()
      [2.0, 3.0]
    """
    logits = jnp.asarray(logits)
    if logits.ndim != 2:
        raise ValueError(f"logits must have shape [B, K], got {logits.shape}")
    k = logits.shape[1]
    target = check_target(target, logits.shape[0], k)
    # A concrete target out of [0, K) was refused above; a traced one (under jit) cannot
    # be, so its row becomes NaN, value and gradient alike, never a plausible number.
    valid = (target >= 0) & (target < k)
    selected = jnp.take_along_axis(logits, jnp.clip(target, 0, k - 1)[:, None], axis=1)[:, 0]
    # (a product, not jnp.where: where's gradient would be 0 * NaN = NaN on valid rows too)
    return selected * jnp.where(valid, 1.0, jnp.nan).astype(selected.dtype)


def input_gradients(
    logit_fn: LogitFn, params: Params, x: ArrayLike, target: ArrayLike
) -> jax.Array:
    """Gradient of each example's ``target`` logit with respect to its input.

    Args:
      logit_fn: ``(params, x [B, *S]) -> logits [B, K]``, examples independent.
      params: the model's params pytree.
      x: ``[B, *S]`` float.
      target: ``[B]`` int.

    Returns:
      ``[B, *S]``: ``d logit_fn(params, x)[b, target[b]] / d x[b]``, signed.
    """
    x = check_x(x)
    target = check_target(target, x.shape[0])

    def total(x_):
        return jnp.sum(select_logits(logit_fn(params, x_), target))

    return jax.grad(total)(x)


def log_density(
    logit_fn: LogitFn, params: Params, x: ArrayLike, target: ArrayLike | None = None
) -> jax.Array:
    """The classifier's implicit unnormalised log-density (Srinivas & Fleuret 2021, arXiv 2006.09128).

    Reading the logits as an energy model ``p(x, y) = exp(f_y(x)) / Z``: with a target it
    is ``log p(x | y) + const = f_y(x)``, without one ``log p(x) + const =
    logsumexp_y f_y(x)``. The constant (``log Z``) does not depend on ``x``, so gradients,
    Hessians and differences between inputs are exact.

    Args:
      logit_fn: ``(params, x [B, *S]) -> logits [B, K]``.
      params: the model's params pytree.
      x: ``[B, *S]`` float.
      target: ``[B]`` int, or None for the marginal.

    Returns:
      ``[B]``.
    """
    logits = logit_fn(params, check_x(x))
    if target is None:
        return jax.nn.logsumexp(logits, axis=-1)
    return select_logits(logits, target)


def score(
    logit_fn: LogitFn, params: Params, x: ArrayLike, target: ArrayLike | None = None
) -> jax.Array:
    """Score of the implicit density, ``grad_x log p(x | y)`` (or ``grad_x log p(x)``).

    With a target this equals :func:`input_gradients` (the logit-gradient is the
    class-conditional score); without one it is the softmax-weighted sum of all
    logit-gradients.

    Returns:
      ``[B, *S]``.
    """
    x = check_x(x)
    if target is not None:
        target = check_target(target, x.shape[0])
    return jax.grad(lambda z: jnp.sum(log_density(logit_fn, params, z, target)))(x)


@checked(logit_fn=LOGIT_FN, g=CALLABLE)
def shift_logits(logit_fn: LogitFn, g) -> LogitFn:
    """Adds ``g(params, x)`` to every logit: the same softmax, different input-gradients.

    Softmax is invariant to a shift common to all classes, so the returned classifier has
    the same probabilities, cross-entropy and loss-gradients as ``logit_fn`` while each
    logit-gradient changes by ``grad_x g`` (Srinivas & Fleuret 2021, Sec. 3). ``g`` may
    depend on ``params`` (e.g. a learned shift network stored beside the classifier).

    A :class:`jaxgrad.types.TappedLogitFn` stays tapped: its taps see the same values and
    its logits are shifted, so a layer method explains the shifted classifier. ``g`` is a
    separate function of ``x``: its own intermediate values are not the model's taps, so a
    shift that does not depend on the model leaves Grad-CAM unchanged, and the result
    declares no ``biases`` (FullGrad refuses it: ``g`` has no decomposition into input and
    bias terms). :func:`shift_to_target_map`, whose shift reads the model's own logit, keeps
    them.

    Args:
      logit_fn: ``(params, x [B, *S]) -> [B, K]``.
      g: ``(params, x [B, *S]) -> [B]``, one shift per example.

    Returns:
      ``shifted(params, x) = logit_fn(params, x) + g(params, x)[:, None]``.
    """
    return _shifted(logit_fn, lambda params, x, logits: g(params, x), keep_biases=False)


def _shifted(logit_fn: LogitFn, shift, *, keep_biases: bool) -> LogitFn:
    """``logit_fn`` plus ``shift(params, x, logits) -> [B]`` on every logit (tapped or not)."""

    def add(params, x, logits):
        s = shift(params, x, logits)
        if s.shape != logits.shape[:1]:
            raise ValueError(
                f"g must return one value per example, shape {logits.shape[:1]}, got {s.shape}"
            )
        return logits + s[:, None]

    def shifted(params: Params, x: jax.Array) -> jax.Array:
        return add(params, x, logit_fn(params, x))

    if not isinstance(logit_fn, TappedLogitFn):
        return shifted

    def taps(params, x, perturbations=None):
        logits, values = logit_fn.taps(params, x, perturbations)
        return add(params, x, logits), values

    with_activation = None
    if logit_fn.with_activation is not None:

        def with_activation(transform):
            return _shifted(logit_fn.with_activation(transform), shift, keep_biases=keep_biases)

    biases = logit_fn.biases if keep_biases else None
    return TappedLogitFn(shifted, taps, biases, with_activation)


@checked(f=CALLABLE)
def hvp(f, x: ArrayLike, v: ArrayLike) -> jax.Array:
    """Hessian-vector products of a per-example function, forward-over-reverse.

    Args:
      f: ``[B, *S] -> [B]`` with independent examples (or ``[*S] -> []``).
      x: the point, ``[B, *S]``.
      v: the directions, ``x``'s shape.

    Returns:
      ``H_b v_b`` for every example, ``[B, *S]``: ``jax.jvp(jax.grad(sum f), (x,), (v,))``.
    """
    x, v = jnp.asarray(x), jnp.asarray(v)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"x must be a floating-point array, got dtype {x.dtype}")
    if v.shape != x.shape:
        raise ValueError(f"v must have x's shape {x.shape}, got {v.shape}")
    return jax.jvp(jax.grad(lambda z: jnp.sum(f(z))), (x,), (v.astype(x.dtype),))[1]


@checked(logit_fn=LOGIT_FN, target_class=integer(0, traced=True))
def shift_to_target_map(logit_fn: LogitFn, target_class: int, target_map: ArrayLike) -> LogitFn:
    """A classifier with the same softmax whose ``target_class`` input-gradient is ``target_map``.

    The closed form of the shift manipulation: with ``g(x) = <m, x> - f_c(x)`` added to every
    logit, ``f~_c(x) = <m, x>`` so ``grad_x f~_c = m`` at every input, while softmax (hence
    predictions, cross-entropy and loss-gradients) is unchanged. The other classes'
    gradients move by the same ``m - grad_x f_c``. The shift reads ``f_c`` from the model's
    own logits, so for a :class:`jaxgrad.types.TappedLogitFn` every layer method sees
    ``f~_c`` too (e.g. Grad-CAM of class c is zero: ``f~_c`` does not depend on any layer).

    Args:
      logit_fn: ``(params, x [B, *S]) -> [B, K]``.
      target_class: the class whose gradient is set.
      target_map: ``[*S]``, any image.

    Returns:
      The shifted ``logit_fn``.
    """
    check_finite(jnp.asarray(target_map)[None], "target_map")
    m = jnp.asarray(target_map)

    def shift(params: Params, x: jax.Array, logits: jax.Array) -> jax.Array:
        if x.shape[1:] != m.shape:
            raise ValueError(
                f"target_map must have the per-example shape {x.shape[1:]}, got {m.shape}"
            )
        axes = tuple(range(1, x.ndim))
        return jnp.sum(x * m[None], axis=axes) - logits[:, target_class]

    return _shifted(logit_fn, shift, keep_biases=True)


@checked(eps=POSITIVE)
def cosine_similarity(a: ArrayLike, b: ArrayLike, eps: float = 1e-12) -> jax.Array:
    """Per-example cosine similarity of ``[B, *S]`` arrays (``b`` may be ``[*S]``), ``[B]``."""
    a, b = jnp.asarray(a), jnp.asarray(b)
    if b.shape not in (a.shape, a.shape[1:]):
        raise ValueError(f"b must have a's shape {a.shape} or {a.shape[1:]}, got {b.shape}")
    b = jnp.broadcast_to(b, a.shape)
    axes = tuple(range(1, a.ndim))
    num = jnp.sum(a * b, axis=axes)
    den = jnp.sqrt(jnp.sum(a * a, axis=axes) * jnp.sum(b * b, axis=axes))
    return num / jnp.maximum(den, eps)


@checked(alpha=NONNEGATIVE)
def gradient_manipulation_loss(
    logit_fn: LogitFn,
    params: Params,
    x: ArrayLike,
    target: ArrayLike,
    target_map: ArrayLike,
    *,
    alpha: ArrayLike = 1.0,
) -> jax.Array:
    """Cross-entropy plus ``alpha * (1 - cos(grad_x f_y(x), m))`` per example, ``[B]``.

    The learned form of the shift manipulation (Srinivas & Fleuret 2021, Sec. 3): fine-tuning
    with this loss pulls every logit-gradient of the label ``target`` (``[B]`` int) toward
    the arbitrary map ``m`` (``[*S]``) while cross-entropy keeps the classifier;
    differentiable in ``params`` (double backprop).
    """
    x = check_x(x)
    if jnp.shape(target_map) not in (x.shape, x.shape[1:]):
        raise ValueError(
            f"target_map must have the per-example shape {x.shape[1:]} (or x's {x.shape}), "
            f"got {jnp.shape(target_map)}"
        )
    logits = logit_fn(params, x)
    ce = -select_logits(jax.nn.log_softmax(logits, axis=-1), target)
    grads = input_gradients(logit_fn, params, x, target)
    return ce + alpha * (1.0 - cosine_similarity(grads, target_map))


__all__ = [
    "cosine_similarity",
    "gradient_manipulation_loss",
    "hvp",
    "input_gradients",
    "log_density",
    "score",
    "select_logits",
    "shift_logits",
    "shift_to_target_map",
]
