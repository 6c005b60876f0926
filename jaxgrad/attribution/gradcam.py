"""Grad-CAM (Selvaraju et al. 2017, arXiv 1610.02391) and HiResCAM on a named layer.

For a layer's activations ``A [B, h, w, c]`` and the gradient ``G = d f_y / d A``:

- ``variant="gradcam"``: ``cam = sum_c mean_{h,w}(G_c) A_c`` (channel weights are the
  spatially averaged gradients, the paper's rule);
- ``variant="hirescam"`` (Draelos & Carin 2020, arXiv 2011.08891): ``cam = sum_c G_c * A_c``
  element-wise, which keeps the gradient's spatial support: a logit that reads one region
  gets a map that is exactly zero elsewhere, which Grad-CAM's averaged weights do not give
  in general.

Then ReLU (the paper's; ``relu=False`` keeps the sign) and a bilinear upsampling to the input
size (half-pixel centres, as PyTorch's ``interpolate(mode="bilinear")``). The layer is a tap
of a jaxgrad Linen model (``jaxgrad.models.tap``), named by its path, e.g. ``"hidden2_act"``
for the MNIST CNN or ``"layer4_block2/act"`` for the ResNet.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgrad.attribution._common import (
    check_inputs,
    check_layer,
    linen_model,
    multi_target,
    resize_bilinear,
    tap_gradients,
)
from jaxgrad.types import ArrayLike, LogitFn, Params

VARIANTS = ("gradcam", "hirescam")


@multi_target
def gradcam(
    logit_fn: LogitFn,
    params: Params,
    x: ArrayLike,
    target: ArrayLike,
    *,
    key: jax.Array | None = None,
    layer: str,
    variant: str = "gradcam",
    relu: bool = True,
    return_layer_map: bool = False,
    model: nn.Module | None = None,
) -> jax.Array:
    """Class activation map of ``target`` at ``layer``, upsampled to the input.

    Args:
      logit_fn: built by ``jaxgrad.models.linen_logit_fn(model)`` (or pass ``model=``).
      params: the model's variables.
      x: ``[B, H, W, C]`` images.
      target: ``[B]`` (or ``[B, T]``) int.
      key: unused (deterministic).
      layer: the path of a spatial tap ``[B, h, w, c]``.
      variant: ``"gradcam"`` or ``"hirescam"``.
      relu: apply the ReLU of the paper.
      return_layer_map: return the ``[B, h, w]`` map at the layer's resolution instead.
      model: the Linen module, when ``logit_fn`` does not carry it.

    Returns:
      ``[B, H, W, C]`` (the map repeated over the input's channels), or ``[B, h, w]``.
    """
    del key
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    model = linen_model(logit_fn, model)
    x, target = check_inputs(x, target)
    if x.ndim != 4:
        raise ValueError(f"x must be images [B, H, W, C] for Grad-CAM, got shape {x.shape}")
    _, grads, values, _ = tap_gradients(model, params, x, target)
    check_layer(layer, values)
    a, g = values[layer], grads[layer]
    if a.ndim != 4:
        raise ValueError(f"layer {layer!r} must be spatial [B, h, w, c], got shape {a.shape}")
    if variant == "gradcam":
        cam = jnp.einsum("bhwc,bc->bhw", a, jnp.mean(g, axis=(1, 2)))
    else:
        cam = jnp.sum(g * a, axis=-1)
    if relu:
        cam = jax.nn.relu(cam)
    if return_layer_map:
        return cam
    up = resize_bilinear(cam[..., None], x.shape[1:3], align_corners=False)
    return jnp.broadcast_to(up, x.shape).astype(x.dtype)
