"""Input validation shared by the attribution methods."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxgrad.gradients import check_target


def check_inputs(x, target) -> tuple[jax.Array, jax.Array]:
    """Validates ``x: [B, *S]`` float and ``target: int[B]``; rejects NaN/inf in concrete ``x``.

    Shapes and dtypes are checked at trace time; values only when ``x`` is concrete (an
    eager call), since a check inside ``jit`` would need a host sync.
    """
    if not isinstance(x, jax.core.Tracer):
        arr = np.asarray(x)
        if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
            bad = np.flatnonzero(~np.isfinite(arr.reshape(len(arr), -1)).all(axis=1))
            raise ValueError(
                f"x contains NaN or infinite values in {len(bad)} example(s), first at index {bad[0]}"
            )
    x = jnp.asarray(x)
    if x.ndim < 2:
        raise ValueError(f"x must have a batch axis and features [B, *S], got shape {x.shape}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"x must be a floating-point array, got dtype {x.dtype}")
    return x, check_target(target, x.shape[0])


def check_positive_int(value, name: str) -> int:
    """Raises a ``ValueError`` naming ``name`` unless ``value`` is an int >= 1 (static args)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def broadcast_baseline(baseline, x: jax.Array) -> jax.Array:
    """A fixed baseline (``None`` = zeros, a number or an array) broadcast to ``x``'s shape."""
    if baseline is None:
        return jnp.zeros_like(x)
    b = jnp.asarray(baseline, x.dtype)
    try:
        return jnp.broadcast_to(b, x.shape)
    except ValueError:
        raise ValueError(
            f"baseline of shape {b.shape} is not broadcastable to x's shape {x.shape}"
        ) from None


def multi_target(method):
    """Lets ``method`` take ``target`` of shape ``[B, T]`` as well as ``[B]``.

    With ``[B, T]`` targets the method is vmapped over the T axis (same ``x``, same ``key``,
    so a stochastic method shares its noise across targets) and returns ``[B, T, *S]``
    (every output gains the T axis after the batch axis, e.g. IG's delta becomes
    ``[B, T]``). Targets are checked against the number of classes before the vmap, since
    inside it they are traced.
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
        if not isinstance(target, jax.core.Tracer):
            num_classes = jax.eval_shape(logit_fn, params, x).shape[-1]
            check_target(np.asarray(target).reshape(-1), int(np.size(target)), num_classes)
        target = jnp.asarray(target)
        return jax.vmap(
            lambda t: method(logit_fn, params, x, t, *args, **kwargs), in_axes=1, out_axes=1
        )(target)

    return wrapper


def linen_model(logit_fn, model):
    """The Flax Linen module behind ``logit_fn`` (``model`` if given, else ``logit_fn.model``)."""
    model = model if model is not None else getattr(logit_fn, "model", None)
    if model is None:
        raise ValueError(
            "this method needs the Flax Linen model with jaxgrad taps: pass model=, or build "
            "logit_fn with jaxgrad.models.linen_logit_fn(model)"
        )
    return model


def _flatten(tree, prefix=()) -> dict[str, jax.Array]:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict) or hasattr(v, "items"):
            out.update(_flatten(v, (*prefix, k)))
        else:
            out["/".join((*prefix, k))] = v[0] if isinstance(v, tuple) else v
    return out


def tap_gradients(model, variables, x, target):
    """Gradients of the target logits with respect to ``x`` and to every tap of ``model``.

    Returns:
      ``(input_gradient [B, *S], tap_gradients, tap_values, logits)`` where the two dicts map
      a tap's path (``"hidden1_out"``, ``"layer1_block1/bn1_out"``) to ``[B, ...]`` arrays.
    """
    from jaxgrad.gradients import select_logits
    from jaxgrad.models.adapters import zero_perturbations
    from jaxgrad.models.layers import INTERMEDIATES, PERTURBATIONS

    pert = zero_perturbations(model, variables, x)

    def f(xx, p):
        logits, state = model.apply(
            {**variables, PERTURBATIONS: p}, xx, train=False, mutable=[INTERMEDIATES]
        )
        return jnp.sum(select_logits(logits, target)), (state[INTERMEDIATES], logits)

    (gx, gp), (values, logits) = jax.grad(f, argnums=(0, 1), has_aux=True)(x, pert)
    return gx, _flatten(gp), _flatten(values), logits


def check_layer(layer: str, available) -> None:
    """Raises a ``ValueError`` naming ``layer`` and the available taps when it is not one."""
    if layer not in available:
        raise ValueError(
            f"layer {layer!r} is not a tap of the model; available: {sorted(available)}"
        )


def _interp_matrix(n_in: int, n_out: int, align_corners: bool) -> np.ndarray:
    """``[n_out, n_in]`` linear-interpolation weights (PyTorch's ``F.interpolate`` rule)."""
    i = np.arange(n_out, dtype=np.float64)
    if align_corners:
        src = i * ((n_in - 1) / (n_out - 1)) if n_out > 1 else np.zeros_like(i)
    else:
        src = np.maximum((i + 0.5) * (n_in / n_out) - 0.5, 0.0)
    lo = np.minimum(np.floor(src).astype(int), n_in - 1)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = src - lo
    m = np.zeros((n_out, n_in))
    np.add.at(m, (np.arange(n_out), lo), 1.0 - frac)
    np.add.at(m, (np.arange(n_out), hi), frac)
    return m


def resize_bilinear(maps: jax.Array, size: tuple[int, int], *, align_corners: bool) -> jax.Array:
    """Bilinear resize of ``[B, h, w, C]`` maps to ``[B, *size, C]``, as PyTorch's ``interpolate``.

    ``align_corners=True`` maps corner pixels onto corner pixels (FullGrad's choice);
    ``False`` uses half-pixel centres (``jax.image.resize``'s rule when upsampling).
    """
    mh = jnp.asarray(_interp_matrix(maps.shape[1], size[0], align_corners), maps.dtype)
    mw = jnp.asarray(_interp_matrix(maps.shape[2], size[1], align_corners), maps.dtype)
    return jnp.einsum("Hh,bhwc,Ww->bHWc", mh, maps, mw)
