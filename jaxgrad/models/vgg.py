"""CIFAR VGG (Simonyan & Zisserman 2015, arXiv 1409.1556) with BatchNorm, VGG-11 by default.

The CIFAR variant the score-matching authors' code uses as the GAN-test proxy
(``--proxy-model-arch vgg11``): 3x3 convolutions with padding 1, each followed by BatchNorm
and the activation, 2x2 max-pooling at every ``"M"`` of the configuration, and one dense
layer on the final 1x1x512 features. The convolutions have no bias of their own (the
PyTorch model's are redundant before BatchNorm, whose shift takes their place), so each
``bn<i>_out`` tap carries the layer's whole effective bias (what FullGrad sums); VGG-11 has
9,228,362 trainable parameters with 10 classes (PyTorch's 9,231,114 less the 2,752 conv
biases) and 9,274,532 with 100.

Taps: ``bn<i>_out`` (BatchNorm outputs), ``act<i>`` (the activations Grad-CAM uses; the
last is ``act8`` for VGG-11) and ``logits_out``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgrad._validation import FRACTION, POSITIVE, POSITIVE_INT, as_int, check_fields, check_images
from jaxgrad.models.layers import (
    Activation,
    conv_general_dilated,
    get_activation,
    max_pool_2x2,
    tap,
)

CONFIGS = {
    "vgg11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg13": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg16": (
        64,
        64,
        "M",
        128,
        128,
        "M",
        256,
        256,
        256,
        "M",
        512,
        512,
        512,
        "M",
        512,
        512,
        512,
        "M",
    ),  # fmt: skip
}


class VGG(nn.Module):
    """CIFAR VGG with BatchNorm.

    Attributes:
      num_classes: number of logits K.
      layers: widths of the 3x3 convolutions with ``"M"`` for a 2x2 max-pool (one of
        :data:`CONFIGS`, VGG-11 by default).
      activation: ``"relu"``, ``"softplus"`` (with ``beta``) or a callable.
      beta: softplus sharpness.
      bn_momentum: running-average momentum (Flax convention; PyTorch's 0.1 is 0.9 here).
      dtype: the computation's dtype (``"bfloat16"`` for mixed precision); parameters stay
        float32 and the logits are returned as float32.
    """

    num_classes: int = 10
    layers: Sequence[int | str] = CONFIGS["vgg11"]
    activation: str | Activation = "relu"
    beta: float = 1.0
    bn_momentum: float = 0.9
    dtype: Any = "float32"

    def __post_init__(self):
        check_fields(self, num_classes=POSITIVE_INT, beta=POSITIVE, bn_momentum=FRACTION)
        for v in self.layers:
            if v != "M":
                as_int(v, "each of VGG.layers (a width, or 'M' for a max-pool)", low=1)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Logits ``[B, K]`` of images ``x: [B, H, W, C]``; ``train`` selects batch statistics."""
        expected = None
        if not self.is_initializing() and "conv1" in self.variables.get("params", {}):
            expected = self.variables["params"]["conv1"]["kernel"].shape[-2]
        check_images(x, "x", expected)
        dtype = jnp.dtype(self.dtype)
        act = get_activation(self.activation, self.beta)
        x = x.astype(dtype)
        i = 0
        for width in self.layers:
            if width == "M":
                x = max_pool_2x2(x)
                continue
            i += 1
            x = nn.Conv(
                int(width),
                (3, 3),
                padding=1,
                use_bias=False,
                dtype=dtype,
                conv_general_dilated=conv_general_dilated,
                name=f"conv{i}",
            )(x)
            x = nn.BatchNorm(
                use_running_average=not train,
                momentum=self.bn_momentum,
                epsilon=1e-5,
                dtype=dtype,
                name=f"bn{i}",
            )(x)
            x = tap(self, f"bn{i}_out", x)
            x = tap(self, f"act{i}", act(x))
        x = jnp.mean(x, axis=(1, 2))  # the 1x1 map of 32x32 inputs; global pooling otherwise
        x = nn.Dense(self.num_classes, dtype=dtype, name="logits")(x)
        return tap(self, "logits_out", x.astype(jnp.float32))


VGG11 = functools.partial(VGG, layers=CONFIGS["vgg11"])
