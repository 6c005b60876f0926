"""Classification losses, per example and masked, and the loss-function contract of training.

A training loss function has the signature ``loss_fn(params, model_state, batch, key) ->
(loss, (new_model_state, metrics))``: ``params`` are the trainable parameters, ``model_state``
the other mutable collections (``{"batch_stats": ...}`` for BatchNorm models, ``{}``
otherwise), ``batch`` a dict with ``image``, ``label`` and ``mask``, ``key`` a per-step key.
``loss`` is a scalar (the masked mean) and ``metrics`` a dict of scalars.
:func:`classifier_loss` builds one from a Linen model and any per-example loss, e.g. a
regularized loss of :mod:`jaxgrad.score_matching` or PGD's adversarial loss.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxgrad._validation import CALLABLE, a_callable, check_target, checked, linen_module
from jaxgrad.score_matching import logits_with_vjp, make_regularizer
from jaxgrad.trace_estimators import TraceEstimator

LossFn = Callable[[Any, dict, dict, jax.Array], tuple[jax.Array, tuple[dict, dict]]]


def cross_entropy(logits: jax.Array, target: jax.Array) -> jax.Array:
    """Softmax cross-entropy per example.

    Args:
      logits: ``[B, K]`` float.
      target: ``[B]`` int in ``[0, K)``, the labels.

    Returns:
      ``[B]`` float, unreduced.
    """
    if logits.ndim != 2:
        raise ValueError(f"logits must have shape [B, K], got {logits.shape}")
    if target.shape != logits.shape[:1]:
        raise ValueError(f"target must have shape {logits.shape[:1]}, got {target.shape}")
    target = check_target(target, logits.shape[0], logits.shape[-1])
    return optax.softmax_cross_entropy_with_integer_labels(logits, target)


def masked_mean(values: jax.Array, mask: jax.Array | None) -> jax.Array:
    """Mean of ``values [B]`` over the rows where ``mask`` is 1 (all rows if ``mask`` is None)."""
    if mask is None:
        return jnp.mean(values)
    if mask.shape != values.shape:
        raise ValueError(f"mask must have values' shape {values.shape}, got {mask.shape}")
    mask = mask.astype(values.dtype)
    return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)


# reg(logit_fn, params, x, target, *, key[, forward]) -> [B], e.g. make_regularizer(...).
Regularizer = Callable[..., jax.Array]


@checked(
    model=linen_module,
    per_example_loss=CALLABLE,
    augment=a_callable(optional=True),
    regularizer=a_callable(optional=True),
)
def classifier_loss(
    model: nn.Module,
    per_example_loss: Callable[..., jax.Array] = cross_entropy,
    *,
    augment: Callable[[jax.Array, jax.Array], jax.Array] | None = None,
    regularizer: Regularizer | None = None,
) -> LossFn:
    """A training ``loss_fn`` for a Linen classifier applied in training mode.

    Args:
      model: a Linen module taking ``(x, train)``.
      per_example_loss: ``(logits [B, K], target [B]) -> [B]``.
      augment: optional ``(key, images) -> images`` applied first (e.g. ``cifar_augment``).
      regularizer: optional ``(logit_fn, params, x, target, *, key) -> [B]`` added to the
        per-example loss (see :func:`regularized_classifier_loss`). One whose attribute
        ``accepts_forward`` is true (:func:`jaxgrad.score_matching.make_regularizer`'s) is
        called with ``forward=``, the loss's own forward pass
        (:class:`jaxgrad.score_matching.Forward`), and reuses it. Its ``logit_fn`` is the
        model in training mode: with BatchNorm, the statistics of the batch it is given
        (so a perturbed batch ``x + v`` is normalised by its own statistics and examples
        interact slightly, as in the authors' PyTorch code); the running averages it would
        update are discarded.

    Returns:
      ``loss_fn(params, model_state, batch, key)`` following the module's contract, with
      metrics ``accuracy`` (masked) and ``regularizer`` when one is given.
    """

    def loss_fn(params, model_state, batch, key):
        x, labels, mask = batch["image"], batch["label"], batch.get("mask")
        if augment is not None:
            x = augment(jax.random.fold_in(key, 0), x)

        def apply(p, z):  # (logits, updated model state)
            if model_state:
                variables = {"params": p, **model_state}
                return model.apply(variables, z, train=True, mutable=list(model_state))
            return model.apply({"params": p}, z, train=True), model_state

        shared = regularizer is not None and getattr(regularizer, "accepts_forward", False)
        if shared:
            # One forward pass for the loss and the regularizer: one backward pass for both.
            forward, new_state = logits_with_vjp(
                apply,
                params,
                x,
                has_aux=True,
                double_backprop=getattr(regularizer, "double_backprop", True),
            )
            logits = forward.logits
        else:
            logits, new_state = apply(params, x)
        per_example = per_example_loss(logits, labels)
        metrics = {}
        if regularizer is not None:

            def train_logit_fn(p, z):
                return apply(p, z)[0]

            extra = {"forward": forward} if shared else {}
            reg = regularizer(
                train_logit_fn, params, x, labels, key=jax.random.fold_in(key, 1), **extra
            )
            per_example = per_example + reg
            metrics["regularizer"] = masked_mean(reg, mask)
        loss = masked_mean(per_example, mask)
        correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
        metrics["accuracy"] = masked_mean(correct, mask)
        return loss, (dict(new_state), metrics)

    loss_fn.model = model  # fit checks labels against the model's logits
    return loss_fn


@checked(loss_fn=CALLABLE, augment=a_callable(optional=True))
def with_augmentation(
    loss_fn: LossFn, augment: Callable[[jax.Array, jax.Array], jax.Array] | None
) -> LossFn:
    """``loss_fn`` on augmented batches: ``augment(key, images)`` is applied first.

    Works for any loss of the contract (cross-entropy, Eq. 4's regularized losses, PGD's
    adversarial loss: the attack then starts from the augmented images). The augmentation's
    key is the step key folded with 7, a value the losses here do not fold in themselves.
    ``augment=None`` returns ``loss_fn`` itself.
    """
    if augment is None:
        return loss_fn

    def loss(params, model_state, batch, key):
        x = augment(jax.random.fold_in(key, 7), batch["image"])
        return loss_fn(params, model_state, {**batch, "image": x}, key)

    loss.model = getattr(loss_fn, "model", None)
    return loss


def regularized_classifier_loss(
    model: nn.Module,
    *,
    kind: str,
    lam: float | None = None,
    mu: float | None = None,
    tau: float | None = None,
    trace_estimator: TraceEstimator | None = None,
    augment: Callable | None = None,
) -> LossFn:
    """The training loss of Srinivas & Fleuret (2021), Eq. 4: cross-entropy + ``lam`` x regularizer.

    The term is :func:`jaxgrad.score_matching.make_regularizer`'s (``kind`` ``none``,
    ``score_matching``, ``anti_score_matching`` or ``gradient_norm``; hyper-parameters left
    as None take the paper's values), on the model in training mode. The per-step key of the
    train step feeds the trace estimator.
    """
    reg = make_regularizer(kind, lam=lam, mu=mu, tau=tau, trace_estimator=trace_estimator)
    if kind == "none":
        return classifier_loss(model, augment=augment)
    return classifier_loss(model, augment=augment, regularizer=reg)
