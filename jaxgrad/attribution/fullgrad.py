"""FullGrad (Srinivas & Fleuret 2019, arXiv 1905.00780): the full-gradient decomposition and saliency.

For a network with biases and piecewise-linear activations (ReLU, max-pooling, BatchNorm in
evaluation mode), the target logit splits exactly into an input part and one part per bias:

    f_y(x) = sum(x * d f_y/dx) + sum_l sum(d f_y/dz_l * b_l),

where ``z_l`` is the output of layer l carrying the bias ``b_l``. FullGrad needs the model's
internals, declared by a :class:`jaxgrad.types.TappedLogitFn`: its ``taps`` give
``d f_y / d z_l`` and its ``biases`` the ``b_l`` carried by each tap (for a BatchNorm in
evaluation mode, the effective bias ``beta - mean * gamma / sqrt(var + eps)``; see
``jaxgrad.models.module_biases``). A declared bias with no tap, or a decomposition that does not
add up to the logit, is reported with a :class:`FullGradWarning` naming the layers.

The saliency map follows the authors' code (``idiap/fullgrad-saliency``): ``psi`` = absolute
value then per-example min-max rescaling to ``[0, 1]``, applied to ``x * d f/dx`` and to every
spatial (convolutional) bias-gradient, the latter upsampled bilinearly (corners aligned) to
the input size; channels are summed and the maps added.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxgrad._filters import resize_bilinear
from jaxgrad._taps import tap_gradients
from jaxgrad._validation import check_images, check_inputs, check_x, is_concrete
from jaxgrad.attribution._common import multi_target
from jaxgrad.gradients import select_logits
from jaxgrad.types import ArrayLike, Params, TappedLogitFn, require_tapped


class FullGradDecomposition(NamedTuple):
    """The terms of the full-gradient decomposition of ``f_y(x)``.

    Attributes:
      input_gradient: ``[B, *S]``, ``d f_y / d x`` (the input part is ``x * input_gradient``).
      bias_gradients: ``{tap path: [B, ...]}``, ``d f_y / d z_l * b_l`` per biased layer.
    """

    input_gradient: jax.Array
    bias_gradients: dict[str, jax.Array]


def fullgrad_decomposition(
    logit_fn: TappedLogitFn, params: Params, x: ArrayLike, target: ArrayLike
) -> FullGradDecomposition:
    """The input-gradient and the bias-gradients ``d f_y / d z_l * b_l`` of every biased layer.

    Args:
      logit_fn: a :class:`jaxgrad.types.TappedLogitFn` declaring ``taps`` and ``biases``
        (``linen_logit_fn(model)``, ``nnx_logit_fn(module)`` or ``hooked_logit_fn(fn,
        biases=...)``); a plain logit function is refused.
      params: the model's variables (evaluation mode: BatchNorm uses its running averages).
      x: ``[B, *S]``.
      target: ``[B]`` int.

    Returns:
      For a piecewise-linear network, ``sum(x * input_gradient) + sum of every bias gradient
      = f_y(x)`` per example.

    Warns:
      ``FullGradWarning`` when a declared bias has no tap, naming the layers, or (outside
      ``jit``) when the decomposition misses more than 0.1% of the largest logit (4 ulps of
      the lowest precision among the logits and taps, for bfloat16 models): a bias the model
      does not declare, an input transform, or a smooth activation, with the gap and the taps
      that carry no declared bias.
    """
    lf = require_tapped(logit_fn, "fullgrad", "biases")
    x, target = check_inputs(x, target)
    gx, grads, values, logits = tap_gradients(lf, params, x, target)
    biases = lf.biases(params)
    untapped = sorted(set(biases) - set(grads))
    if untapped:
        warnings.warn(
            f"fullgrad: the biases of {[k or '<top-level module>' for k in untapped]} are added "
            "to no tap, so the decomposition leaves them out; tap each biased layer's output "
            "(a submodule's output is a tap; for hooked_logit_fn, pass it through tap(name, ...))",
            FullGradWarning,
            stacklevel=2,
        )
    terms = {}
    for name, g in grads.items():  # "layer#2": the second call of a layer carries its bias too
        b = biases.get(name.partition("#")[0])
        if b is not None:
            b = jnp.asarray(b)
            terms[name] = g * b.reshape((1,) * (g.ndim - b.ndim) + b.shape)
    decomposition = FullGradDecomposition(gx, terms)
    if is_concrete(logits) and is_concrete(gx):
        eps = max(float(jnp.finfo(v.dtype).eps) for v in (logits, *values.values()))
        unbiased = sorted(k for k in grads if k.partition("#")[0] not in biases)
        _check_completeness(decomposition, x, logits, target, max(1e-3, 4 * eps), unbiased)
    return decomposition


class FullGradWarning(UserWarning):
    """The full-gradient decomposition does not add up to the logit it explains."""


def completeness_gap(
    decomposition: FullGradDecomposition, x: ArrayLike, logits: ArrayLike, target: ArrayLike
) -> jax.Array:
    """``f_y(x) - sum(x * input_gradient) - sum of the bias gradients``, per example ``[B]``."""
    x = check_x(x)
    if x.shape != decomposition.input_gradient.shape:
        raise ValueError(
            f"x must have the decomposition's input_gradient shape "
            f"{decomposition.input_gradient.shape}, got {x.shape}"
        )
    logits = jnp.asarray(logits)
    if logits.ndim != 2 or logits.shape[0] != x.shape[0]:
        raise ValueError(f"logits must have shape [B, K] with B = {x.shape[0]}, got {logits.shape}")
    axes = tuple(range(1, x.ndim))
    total = jnp.sum(x * decomposition.input_gradient, axis=axes)
    for term in decomposition.bias_gradients.values():
        total = total + jnp.sum(term, axis=tuple(range(1, term.ndim)))
    return select_logits(logits, target) - total


def _check_completeness(decomposition, x, logits, target, rtol: float, unbiased) -> None:
    gap = np.asarray(completeness_gap(decomposition, x, logits, target))
    scale = float(np.max(np.abs(np.asarray(logits)))) + 1e-6
    worst = float(np.max(np.abs(gap))) if gap.size else 0.0
    if worst > rtol * scale:
        shown = ", ".join(unbiased[:12]) + (", ..." if len(unbiased) > 12 else "")
        warnings.warn(
            f"fullgrad: the decomposition misses up to {worst:.4g} of f_y(x) (largest |logit| "
            f"{scale:.4g}); its biased layers are {sorted(decomposition.bias_gradients)}, and "
            f"the taps with no declared bias are [{shown}]. A bias left out of biases(), a bias "
            "outside every tap, an input transform, or a non-piecewise-linear activation "
            "(softplus, GELU, LayerNorm) leaves a gap",
            FullGradWarning,
            stacklevel=3,
        )


def _psi(a: jax.Array) -> jax.Array:
    """FullGrad's post-processing: ``|a|``, then per-example min-max to ``[0, 1]``."""
    a = jnp.abs(a)
    axes = tuple(range(1, a.ndim))
    a = a - jnp.min(a, axis=axes, keepdims=True)
    return a / (jnp.max(a, axis=axes, keepdims=True) + 1e-6)


@multi_target
def fullgrad(
    logit_fn: TappedLogitFn,
    params: Params,
    x: ArrayLike,
    target: ArrayLike,
    *,
    key: jax.Array | None = None,
) -> jax.Array:
    """FullGrad saliency of images, ``[B, H, W, C]`` (one map repeated over channels).

    Args:
      logit_fn, params: as for :func:`fullgrad_decomposition`.
      x: ``[B, H, W, C]`` images.
      target: ``[B]`` (or ``[B, T]``) int.
      key: unused (deterministic).

    Returns:
      ``psi(x * grad).sum(channels) + sum_l upsample(psi(bias_gradient_l)).sum(channels)``
      over the spatial layers, non-negative.
    """
    del key
    x = jnp.asarray(x)
    check_images(x, "x")
    gx, bias_grads = fullgrad_decomposition(logit_fn, params, x, target)
    cam = jnp.sum(_psi(gx * x), axis=-1, keepdims=True)
    for bg in bias_grads.values():
        if bg.ndim == 4:  # convolutional layers only, as in the authors' code
            up = resize_bilinear(_psi(bg), x.shape[1:3], align_corners=True)
            cam = cam + jnp.sum(up, axis=-1, keepdims=True)
    return jnp.broadcast_to(cam, x.shape).astype(x.dtype)
