"""Projected gradient descent (Madry et al. 2018, arXiv 1706.06083): attack and adversarial training.

``pgd_attack`` maximises the cross-entropy of ``logit_fn`` within an L-infinity or L2 ball of
radius ``epsilon`` around ``x`` (and inside the data range ``clip``): an optional uniform
random start in the ball, then ``steps`` ascent steps of size ``step_size`` (the sign of the
gradient for L-infinity, the per-example normalised gradient for L2), each followed by the
projection back onto the ball and the data range. ``adversarial_classifier_loss`` trains on
the attacked batch, as a drop-in ``loss_fn`` for ``make_train_step``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from jaxgrad._validation import CLIP, as_int, check_number, check_target, check_x
from jaxgrad.training.losses import classifier_loss
from jaxgrad.types import ArrayLike, LogitFn, Params

NORMS = ("linf", "l2")


def _per_example_norm(v):
    return jnp.sqrt(jnp.sum(v * v, axis=tuple(range(1, v.ndim)), keepdims=True))


def _project(delta, norm, epsilon):
    if norm == "linf":
        return jnp.clip(delta, -epsilon, epsilon)
    scale = jnp.minimum(1.0, epsilon / jnp.maximum(_per_example_norm(delta), 1e-12))
    return delta * scale


def _check_attack(norm="linf", epsilon=0.3, steps=40, step_size=0.01, **_):
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    as_int(steps, "steps", low=0)
    check_number(epsilon, "epsilon", low=0.0)
    check_number(step_size, "step_size", low=0.0)


def pgd_attack(
    logit_fn: LogitFn,
    params: Params,
    x: ArrayLike,
    target: ArrayLike,
    *,
    key: jax.Array | None,
    norm: str = "linf",
    epsilon: float = 0.3,
    step_size: float = 0.01,
    steps: int = 40,
    random_start: bool = True,
    clip: tuple[float, float] | None = (0.0, 1.0),
    unroll: bool = False,
) -> jax.Array:
    """Adversarial examples ``[B, *S]`` maximising the cross-entropy of ``target``.

    Args:
      logit_fn: ``(params, x) -> [B, K]`` (evaluation mode).
      params: the model's params (not differentiated).
      x: ``[B, *S]`` inputs.
      target: ``[B]`` int, the labels whose cross-entropy is maximised.
      key: PRNG key for the random start (may be None without one).
      norm: ``"linf"`` or ``"l2"``.
      epsilon: the ball's radius (traced).
      step_size: the ascent step (traced).
      steps: ascent steps (static).
      random_start: start from a uniform point of the ball (L2: uniform in the ball's volume).
      clip: the data range, or None.
      unroll: unroll the ascent loop (static): one straight program instead of a loop,
        which XLA's cost analysis counts whole (a dry run's FLOPs) and which can be faster
        on accelerators at the price of a longer compilation.
    """
    _check_attack(norm, epsilon, steps, step_size)
    steps = as_int(steps, "steps", low=0)
    CLIP(clip, "clip")
    x = check_x(x)
    num_classes = jax.eval_shape(logit_fn, params, x).shape[-1]
    target = check_target(target, x.shape[0], num_classes)
    params = jax.lax.stop_gradient(params)
    eps = jnp.asarray(epsilon, x.dtype)
    lo, hi = clip if clip is not None else (-jnp.inf, jnp.inf)

    def bound(delta):
        delta = _project(delta, norm, eps)
        return jnp.clip(x + delta, lo, hi) - x

    delta = jnp.zeros_like(x)
    if random_start:
        if key is None:
            raise ValueError("random_start=True needs key=")
        if norm == "linf":
            delta = jax.random.uniform(key, x.shape, x.dtype, -1.0, 1.0) * eps
        else:
            k_dir, k_rad = jax.random.split(key)
            d = jax.random.normal(k_dir, x.shape, x.dtype)
            d = d / jnp.maximum(_per_example_norm(d), 1e-12)
            dim = x[0].size
            r = jax.random.uniform(k_rad, (x.shape[0],) + (1,) * (x.ndim - 1), x.dtype)
            delta = d * eps * r ** (1.0 / dim)
        delta = bound(delta)

    def loss(z):
        return jnp.sum(optax.softmax_cross_entropy_with_integer_labels(logit_fn(params, z), target))

    def step(_, delta):
        g = jax.grad(loss)(x + delta)
        if norm == "linf":
            move = jnp.sign(g)
        else:
            move = g / jnp.maximum(_per_example_norm(g), 1e-12)
        return bound(delta + step_size * move)

    delta = jax.lax.fori_loop(0, steps, step, delta, unroll=max(steps, 1) if unroll else 1)
    return jax.lax.stop_gradient(x + delta)


def adversarial_classifier_loss(model, *, augment=None, **attack):
    """A ``loss_fn`` for ``make_train_step`` that trains on PGD examples (Madry et al.).

    The attack runs on the model in evaluation mode with the current params (not
    differentiated through), with ``attack`` passed to :func:`pgd_attack` (``norm``,
    ``epsilon``, ``step_size``, ``steps``, ``random_start``, ``clip``, ``unroll``); the loss is the
    cross-entropy on the attacked batch, in training mode. Metrics: ``accuracy`` (on the
    attacked batch).
    """
    inner = classifier_loss(model)
    _check_attack(**attack)

    def loss_fn(params, model_state, batch, key):
        x = batch["image"]
        if augment is not None:
            x = augment(jax.random.fold_in(key, 0), x)

        def eval_logits(p, z):
            return model.apply({"params": p, **model_state}, z, train=False)

        x_adv = pgd_attack(
            eval_logits, params, x, batch["label"], key=jax.random.fold_in(key, 2), **attack
        )
        return inner(params, model_state, {**batch, "image": x_adv}, jax.random.fold_in(key, 3))

    loss_fn.model = model
    return loss_fn
