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
declared by a :class:`jaxgrad.types.TappedLogitFn` (for a jaxgrad Linen model,
``linen_logit_fn(model)``; taps are ``jaxgrad.models.tap``), named by its path, e.g.
``"hidden2_act"`` for the MNIST CNN or ``"layer4_block2/act"`` for the ResNet.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxgrad._filters import resize_bilinear
from jaxgrad._taps import tap_gradients
from jaxgrad._validation import check_choice, check_images, check_inputs
from jaxgrad.attribution._common import check_layer, multi_target
from jaxgrad.types import ArrayLike, Params, TappedLogitFn, require_tapped

VARIANTS = ("gradcam", "hirescam")


@multi_target
def gradcam_layer_map(
    logit_fn: TappedLogitFn,
    params: Params,
    x: ArrayLike,
    target: ArrayLike,
    *,
    key: jax.Array | None = None,
    layer: str,
    variant: str = "gradcam",
    relu: bool = True,
) -> jax.Array:
    """Class activation map of ``target`` at ``layer``, at the layer's resolution, ``[B, h, w]``.

    Args:
      logit_fn: a :class:`jaxgrad.types.TappedLogitFn` (``jaxgrad.models.linen_logit_fn``);
        a plain logit function is refused.
      params: the model's variables.
      x: ``[B, H, W, C]`` images.
      target: ``[B]`` (or ``[B, T]``) int.
      key: unused (deterministic).
      layer: the path of a spatial tap ``[B, h, w, c]``.
      variant: ``"gradcam"`` or ``"hirescam"``.
      relu: apply the ReLU of the paper.
    """
    del key
    check_choice(variant, VARIANTS, "variant")
    lf = require_tapped(logit_fn, "gradcam")
    x, target = check_inputs(x, target)
    check_images(x, "x")
    _, grads, values, _ = tap_gradients(lf, params, x, target)
    check_layer(layer, values)
    a, g = values[layer], grads[layer]
    if a.ndim != 4:
        raise ValueError(f"layer {layer!r} must be spatial [B, h, w, c], got shape {a.shape}")
    if variant == "gradcam":
        cam = jnp.einsum("bhwc,bc->bhw", a, jnp.mean(g, axis=(1, 2)))
    else:
        cam = jnp.sum(g * a, axis=-1)
    return jax.nn.relu(cam) if relu else cam


@multi_target
def gradcam(
    logit_fn: TappedLogitFn,
    params: Params,
    x: ArrayLike,
    target: ArrayLike,
    *,
    key: jax.Array | None = None,
    layer: str,
    variant: str = "gradcam",
    relu: bool = True,
) -> jax.Array:
    """Class activation map of ``target`` at ``layer``, upsampled to the input, ``[B, H, W, C]``.

    The map of :func:`gradcam_layer_map` (same arguments), resized bilinearly to ``[H, W]``
    and repeated over the input's channels.
    """
    cam = gradcam_layer_map(
        logit_fn, params, x, target, key=key, layer=layer, variant=variant, relu=relu
    )
    x = jnp.asarray(x)
    up = resize_bilinear(cam[..., None], x.shape[1:3], align_corners=False)
    return jnp.broadcast_to(up, x.shape).astype(x.dtype)
