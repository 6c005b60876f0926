"""What several attribution methods share: multi-target vmapping and gradients at taps."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxgrad._validation import check_target, is_concrete
from jaxgrad.gradients import select_logits
from jaxgrad.types import Params, TappedLogitFn


def multi_target(method):
    """Lets ``method`` take ``target`` of shape ``[B, T]`` as well as ``[B]``.

    With ``[B, T]`` targets the method is vmapped over the T axis (same ``x``, same ``key``,
    so a stochastic method shares its noise across targets) and returns ``[B, T, *S]``
    (every output gains the T axis after the batch axis). Targets are checked against the
    number of classes before the vmap, since inside it they are traced.
    """

    @functools.wraps(method)
    def wrapper(logit_fn, params, x, target, *args, **kwargs):
        if np.ndim(target) != 2:
            return method(logit_fn, params, x, target, *args, **kwargs)
        x = jnp.asarray(x)
        if x.ndim < 1 or np.shape(target)[0] != x.shape[0]:
            raise ValueError(
                f"target of shape [B, T] must have B = x.shape[0] = {x.shape[:1]}, "
                f"got {np.shape(target)}"
            )
        if is_concrete(target):
            num_classes = jax.eval_shape(logit_fn, params, x).shape[-1]
            check_target(np.asarray(target).reshape(-1), int(np.size(target)), num_classes)
        target = jnp.asarray(target)
        return jax.vmap(
            lambda t: method(logit_fn, params, x, t, *args, **kwargs), in_axes=1, out_axes=1
        )(target)

    return wrapper


def tap_gradients(logit_fn: TappedLogitFn, params: Params, x: jax.Array, target: jax.Array):
    """Gradients of the target logits with respect to ``x`` and to every tap of ``logit_fn``.

    Returns:
      ``(input_gradient [B, *S], tap_gradients, tap_values, logits)`` where the two dicts map
      a tap's path (``"hidden1_out"``, ``"layer1_block1/bn1_out"``) to ``[B, ...]`` arrays.
    """
    shapes = jax.eval_shape(lambda z: logit_fn.taps(params, z, None)[1], x)
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

    def f(xx, p):
        logits, values = logit_fn.taps(params, xx, p)
        return jnp.sum(select_logits(logits, target)), (values, logits)

    (gx, gp), (values, logits) = jax.grad(f, argnums=(0, 1), has_aux=True)(x, zeros)
    return gx, gp, values, logits


def check_layer(layer: str, available) -> None:
    """Raises a ``ValueError`` naming ``layer`` and the available taps when it is not one."""
    if layer not in available:
        raise ValueError(
            f"layer {layer!r} is not a tap of the model; available: {sorted(available)}"
        )
