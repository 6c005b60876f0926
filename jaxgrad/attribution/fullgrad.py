"""FullGrad (Srinivas & Fleuret 2019, arXiv 1905.00780): the full-gradient decomposition and saliency.

For a network with biases and piecewise-linear activations (ReLU, max-pooling, BatchNorm in
evaluation mode), the target logit splits exactly into an input part and one part per bias:

    f_y(x) = sum(x * d f_y/dx) + sum_l sum(d f_y/dz_l * b_l),

where ``z_l`` is the output of layer l carrying the bias ``b_l``. For a BatchNorm layer in
evaluation mode, ``z = gamma (h - mean) / sqrt(var + eps) + beta`` carries the effective bias
``beta - mean * gamma / sqrt(var + eps)``. The layers are found through the taps of a jaxgrad
Linen model: a tap named ``<module>_out`` is the output of the sibling module ``<module>``,
whose ``bias`` (and, for BatchNorm, ``scale``, ``mean`` and ``var``) define ``b_l``; modules
without a bias (``use_bias=False`` convolutions) contribute nothing.

The saliency map follows the authors' code (``idiap/fullgrad-saliency``): ``psi`` = absolute
value then per-example min-max rescaling to ``[0, 1]``, applied to ``x * d f/dx`` and to every
spatial (convolutional) bias-gradient, the latter upsampled bilinearly (corners aligned) to
the input size; channels are summed and the maps added.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgrad.attribution._common import (
    check_inputs,
    linen_model,
    multi_target,
    resize_bilinear,
    tap_gradients,
)
from jaxgrad.types import ArrayLike, LogitFn, Params

_SUFFIX = "_out"


def _get(tree, path):
    for k in path:
        if not hasattr(tree, "get"):
            return None
        tree = tree.get(k)
        if tree is None:
            return None
    return tree


def effective_biases(variables: Params, tap_paths, *, bn_epsilon: float = 1e-5) -> dict:
    """The bias carried by each ``<module>_out`` tap: a layer's bias or BatchNorm's effective bias.

    Args:
      variables: ``{"params": ..., "batch_stats": ...}``.
      tap_paths: tap paths such as ``"layer1_block1/bn1_out"``.
      bn_epsilon: the BatchNorm epsilon (jaxgrad's and Flax's default 1e-5).

    Returns:
      ``{tap path: bias [features]}`` for the taps whose module has a bias.
    """
    out = {}
    for path in tap_paths:
        parts = path.split("/")
        if not parts[-1].endswith(_SUFFIX):
            continue
        module_path = (*parts[:-1], parts[-1][: -len(_SUFFIX)])
        p = _get(variables.get("params", {}), module_path)
        if p is None or "bias" not in p:
            continue
        stats = _get(variables.get("batch_stats", {}), module_path)
        bias = p["bias"]
        if stats is not None and "mean" in stats:
            scale = p.get("scale", jnp.ones_like(bias))
            bias = bias - stats["mean"] * scale / jnp.sqrt(stats["var"] + bn_epsilon)
        out[path] = bias
    return out


def fullgrad_decomposition(
    logit_fn: LogitFn,
    params: Params,
    x: ArrayLike,
    target: ArrayLike,
    *,
    model: nn.Module | None = None,
    bn_epsilon: float = 1e-5,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The input-gradient and the bias-gradients ``d f_y / d z_l * b_l`` of every biased layer.

    Args:
      logit_fn: built by ``jaxgrad.models.linen_logit_fn(model)`` (or pass ``model=``).
      params: the model's variables (evaluation mode: BatchNorm uses its running averages).
      x: ``[B, *S]``.
      target: ``[B]`` int.
      model: the Linen module, when ``logit_fn`` does not carry it.
      bn_epsilon: BatchNorm's epsilon.

    Returns:
      ``(input_gradient [B, *S], {tap path: bias_gradient [B, ...]})``. For a piecewise-linear
      network, ``sum(x * input_gradient) + sum of every bias_gradient = f_y(x)`` per example.
    """
    model = linen_model(logit_fn, model)
    x, target = check_inputs(x, target)
    gx, grads, _, _ = tap_gradients(model, params, x, target)
    biases = effective_biases(params, grads, bn_epsilon=bn_epsilon)
    return gx, {
        k: grads[k] * b.reshape((1,) * (grads[k].ndim - 1) + (-1,)) for k, b in biases.items()
    }


def _psi(a: jax.Array) -> jax.Array:
    """FullGrad's post-processing: ``|a|``, then per-example min-max to ``[0, 1]``."""
    a = jnp.abs(a)
    axes = tuple(range(1, a.ndim))
    a = a - jnp.min(a, axis=axes, keepdims=True)
    return a / (jnp.max(a, axis=axes, keepdims=True) + 1e-6)


@multi_target
def fullgrad(
    logit_fn: LogitFn,
    params: Params,
    x: ArrayLike,
    target: ArrayLike,
    *,
    key: jax.Array | None = None,
    model: nn.Module | None = None,
    bn_epsilon: float = 1e-5,
) -> jax.Array:
    """FullGrad saliency of images, ``[B, H, W, C]`` (one map repeated over channels).

    Args:
      logit_fn, params, model, bn_epsilon: as for :func:`fullgrad_decomposition`.
      x: ``[B, H, W, C]`` images.
      target: ``[B]`` (or ``[B, T]``) int.
      key: unused (deterministic).

    Returns:
      ``psi(x * grad).sum(channels) + sum_l upsample(psi(bias_gradient_l)).sum(channels)``
      over the spatial layers, non-negative.
    """
    del key
    x = jnp.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"x must be images [B, H, W, C] for FullGrad, got shape {x.shape}")
    gx, bias_grads = fullgrad_decomposition(
        logit_fn, params, x, target, model=model, bn_epsilon=bn_epsilon
    )
    cam = jnp.sum(_psi(gx * x), axis=-1, keepdims=True)
    for bg in bias_grads.values():
        if bg.ndim == 4:  # convolutional layers only, as in the authors' code
            up = resize_bilinear(_psi(bg), x.shape[1:3], align_corners=True)
            cam = cam + jnp.sum(up, axis=-1, keepdims=True)
    return jnp.broadcast_to(cam, x.shape).astype(x.dtype)
