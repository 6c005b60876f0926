"""What several attribution methods share: multi-target vmapping and layer checks."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxgrad._validation import check_target, is_concrete


def multi_target(method=None, *, per_target: tuple[str, ...] = ()):
    """Lets ``method`` take ``target`` of shape ``[B, T]`` as well as ``[B]``, an int or None.

    ``None`` explains each example's predicted class (``argmax`` of the logits, one extra
    forward pass); an int explains that class for every example.

    With ``[B, T]`` targets the method is vmapped over the T axis (same ``x``, same ``key``,
    so a stochastic method shares its noise across targets) and returns ``[B, T, *S]``
    (every output gains the T axis after the batch axis). Targets are checked against the
    number of classes before the vmap, since inside it they are traced.

    Args:
      method: the function, ``method(logit_fn, params, x, target, ...)``.
      per_target: names of the arguments right after ``target`` that carry a T axis too
        (``[B, T, *S]`` with ``[B, T]`` targets, e.g. the attributions that
        ``completeness_delta`` checks); they are vmapped with the targets.
    """
    if method is None:
        return functools.partial(multi_target, per_target=per_target)

    @functools.wraps(method)
    def wrapper(logit_fn, params, x, target, *args, **kwargs):
        if target is None:  # the predicted class of each example
            logits = jax.lax.stop_gradient(logit_fn(params, jnp.asarray(x)))
            target = jnp.argmax(logits, axis=-1)
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
        args, mapped = list(args), []
        for name in per_target:
            value = jnp.asarray(kwargs.pop(name) if name in kwargs else args.pop(0))
            want = (*np.shape(target), *x.shape[1:])
            if value.shape != want:
                raise ValueError(
                    f"with target of shape [B, T] = {np.shape(target)}, {name} must have shape "
                    f"[B, T, *S] = {want}, got {value.shape}"
                )
            mapped.append(value)

        def one(t, *m):
            return method(logit_fn, params, x, t, *m, *args, **kwargs)

        return jax.vmap(one, in_axes=1, out_axes=1)(jnp.asarray(target), *mapped)

    return wrapper


def check_layer(layer: str, available) -> None:
    """Raises a ``ValueError`` naming ``layer`` and the available taps when it is not one."""
    if layer not in available:
        raise ValueError(
            f"layer {layer!r} is not a tap of the model; available: {sorted(available)}"
        )
