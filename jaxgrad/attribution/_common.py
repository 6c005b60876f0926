"""What several attribution methods share: multi-target vmapping and layer checks."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxgrad._validation import check_target, is_concrete


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


def check_layer(layer: str, available) -> None:
    """Raises a ``ValueError`` naming ``layer`` and the available taps when it is not one."""
    if layer not in available:
        raise ValueError(
            f"layer {layer!r} is not a tap of the model; available: {sorted(available)}"
        )
