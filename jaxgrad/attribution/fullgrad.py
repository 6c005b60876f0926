"""FullGrad (Srinivas & Fleuret 2019, arXiv 1905.00780): the full-gradient decomposition and saliency.

For a network with biases and piecewise-linear activations (ReLU, max-pooling, BatchNorm in
evaluation mode), the target logit splits exactly into an input part and one part per bias:

    f_y(x) = sum(x * d f_y/dx) + sum_l sum(d f_y/dz_l * b_l),

where ``z_l`` is the output of layer l carrying the bias ``b_l``. FullGrad needs the model's
internals, declared by a :class:`jaxgrad.types.TappedLogitFn`: its ``taps`` give
``d f_y / d z_l`` and its ``biases`` the ``b_l`` carried by each tap (for a BatchNorm in
evaluation mode, the effective bias ``beta - mean * gamma / sqrt(var + eps)``; see
``jaxgrad.models.effective_biases``). A bias with no tap is an error, since the
decomposition would silently lose it.

The saliency map follows the authors' code (``idiap/fullgrad-saliency``): ``psi`` = absolute
value then per-example min-max rescaling to ``[0, 1]``, applied to ``x * d f/dx`` and to every
spatial (convolutional) bias-gradient, the latter upsampled bilinearly (corners aligned) to
the input size; channels are summed and the maps added.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxgrad._filters import resize_bilinear
from jaxgrad._taps import tap_gradients
from jaxgrad._validation import check_images, check_inputs
from jaxgrad.attribution._common import multi_target
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
        (``jaxgrad.models.linen_logit_fn(model)``); a plain logit function is refused.
      params: the model's variables (evaluation mode: BatchNorm uses its running averages).
      x: ``[B, *S]``.
      target: ``[B]`` int.

    Returns:
      For a piecewise-linear network, ``sum(x * input_gradient) + sum of every bias gradient
      = f_y(x)`` per example.
    """
    lf = require_tapped(logit_fn, "fullgrad", "biases")
    x, target = check_inputs(x, target)
    gx, grads, _, _ = tap_gradients(lf, params, x, target)
    biases = lf.biases(params)
    untapped = sorted(set(biases) - set(grads))
    if untapped:
        raise ValueError(
            f"fullgrad: the biases of {untapped} have no tap, so the decomposition would lose "
            "them; tap each biased layer's output as '<layer>_out'"
        )
    return FullGradDecomposition(
        gx,
        {k: grads[k] * b.reshape((1,) * (grads[k].ndim - 1) + (-1,)) for k, b in biases.items()},
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
