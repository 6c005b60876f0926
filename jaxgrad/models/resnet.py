"""CIFAR ResNet-18 (He et al. 2016, arXiv 1512.03385) with a configurable activation.

The CIFAR variant used by the score-matching paper (Srinivas & Fleuret 2021) and by
DiffROAR (Shah et al. 2021; their CIFAR-10 models are the ResNet-50 of the same family,
:data:`ResNet50`, 23,520,842 parameters with 10 classes): a 3x3 stem with stride 1 and no max-pool, BasicBlocks
``[2, 2, 2, 2]`` of widths 64/128/256/512, BatchNorm, global average pooling and a dense
head. With 10 classes it has 11,173,962 trainable parameters. ``activation="softplus"``
(with ``beta``) gives the smooth network that score matching needs: a ReLU network is
piecewise linear in its input, so its input Hessian is zero almost everywhere.

Every BatchNorm output is tapped as ``<bn>_out`` (FullGrad needs gradients with respect to
the values carrying the effective biases ``beta - mean * gamma / sqrt(var + eps)``), each
block's output as ``act``, and the head's output as ``logits_out``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgrad._validation import (
    FRACTION,
    POSITIVE,
    POSITIVE_INT,
    check_fields,
    check_images,
    one_of,
    positive_ints,
)
from jaxgrad.models.layers import (
    Activation,
    conv_general_dilated,
    get_activation,
    tap,
)


def _conv_and_norm(dtype, bn_momentum: float, train: bool):
    """The ResNets' bias-free He-initialised convolution and BatchNorm, as partials."""
    dtype = jnp.dtype(dtype)
    conv = functools.partial(
        nn.Conv,
        use_bias=False,
        dtype=dtype,
        kernel_init=nn.initializers.he_normal(),
        conv_general_dilated=conv_general_dilated,
    )
    norm = functools.partial(
        nn.BatchNorm, use_running_average=not train, momentum=bn_momentum, epsilon=1e-5, dtype=dtype
    )
    return conv, norm


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with BatchNorm and a (projected when needed) identity shortcut."""

    features: int
    strides: int = 1
    activation: str | Activation = "relu"
    beta: float = 1.0
    bn_momentum: float = 0.9
    dtype: Any = "float32"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        act = get_activation(self.activation, self.beta)
        conv, norm = _conv_and_norm(self.dtype, self.bn_momentum, train)
        y = conv(self.features, (3, 3), strides=self.strides, padding=1, name="conv1")(x)
        y = tap(self, "bn1_out", norm(name="bn1")(y))
        y = act(y)
        y = conv(self.features, (3, 3), padding=1, name="conv2")(y)
        y = tap(self, "bn2_out", norm(name="bn2")(y))
        if self.strides != 1 or x.shape[-1] != self.features:
            x = conv(self.features, (1, 1), strides=self.strides, name="shortcut_conv")(x)
            x = tap(self, "shortcut_bn_out", norm(name="shortcut_bn")(x))
        return tap(self, "act", act(y + x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand (x4), each with BatchNorm, and the shortcut.

    The ResNet-50 block (the CIFAR ResNet-50 of Shah et al.'s robust models); taps as
    :class:`BasicBlock`'s plus ``bn3_out``.
    """

    features: int
    strides: int = 1
    activation: str | Activation = "relu"
    beta: float = 1.0
    bn_momentum: float = 0.9
    dtype: Any = "float32"
    expansion: int = 4

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        act = get_activation(self.activation, self.beta)
        conv, norm = _conv_and_norm(self.dtype, self.bn_momentum, train)
        out = self.features * self.expansion
        y = conv(self.features, (1, 1), name="conv1")(x)
        y = act(tap(self, "bn1_out", norm(name="bn1")(y)))
        y = conv(self.features, (3, 3), strides=self.strides, padding=1, name="conv2")(y)
        y = act(tap(self, "bn2_out", norm(name="bn2")(y)))
        y = conv(out, (1, 1), name="conv3")(y)
        y = tap(self, "bn3_out", norm(name="bn3")(y))
        if self.strides != 1 or x.shape[-1] != out:
            x = conv(out, (1, 1), strides=self.strides, name="shortcut_conv")(x)
            x = tap(self, "shortcut_bn_out", norm(name="shortcut_bn")(x))
        return tap(self, "act", act(y + x))


class ResNet(nn.Module):
    """CIFAR-style ResNet built from :class:`BasicBlock` stages.

    Attributes:
      num_classes: number of logits K.
      stage_sizes: blocks per stage; ``(2, 2, 2, 2)`` is ResNet-18.
      widths: channels per stage.
      activation: ``"relu"``, ``"softplus"`` (with ``beta``) or a callable.
      beta: softplus sharpness.
      bn_momentum: running-average momentum (Flax convention: 0.9 keeps 90% of the old value,
        PyTorch's ``momentum=0.1``).
      dtype: the computation's dtype (``"bfloat16"`` for mixed precision); parameters stay
        float32 and the logits are returned as float32.
      block: ``"basic"`` (:class:`BasicBlock`, ResNet-18/34) or ``"bottleneck"``
        (:class:`Bottleneck`, ResNet-50).
    """

    num_classes: int = 10
    stage_sizes: Sequence[int] = (2, 2, 2, 2)
    widths: Sequence[int] = (64, 128, 256, 512)
    activation: str | Activation = "relu"
    beta: float = 1.0
    bn_momentum: float = 0.9
    dtype: Any = "float32"
    block: str = "basic"

    def __post_init__(self):
        check_fields(
            self,
            num_classes=POSITIVE_INT,
            stage_sizes=positive_ints,
            widths=positive_ints,
            beta=POSITIVE,
            bn_momentum=FRACTION,
            block=one_of("basic", "bottleneck"),
        )
        if len(self.stage_sizes) != len(self.widths):
            raise ValueError(
                f"ResNet.stage_sizes {tuple(self.stage_sizes)} and widths {tuple(self.widths)} "
                "must have one entry per stage"
            )
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Logits ``[B, K]`` of images ``x: [B, H, W, C]``; ``train`` selects batch statistics."""
        expected = None
        if not self.is_initializing() and "stem_conv" in self.variables.get("params", {}):
            expected = self.variables["params"]["stem_conv"]["kernel"].shape[-2]
        check_images(x, "x", expected)
        act = get_activation(self.activation, self.beta)
        dtype = jnp.dtype(self.dtype)
        conv, norm = _conv_and_norm(dtype, self.bn_momentum, train)
        x = conv(self.widths[0], (3, 3), padding=1, name="stem_conv")(x.astype(dtype))
        x = norm(name="stem_bn")(x)
        x = tap(self, "stem_bn_out", x)
        x = tap(self, "stem_act", act(x))
        if self.block not in ("basic", "bottleneck"):
            raise ValueError(f"block must be 'basic' or 'bottleneck', got {self.block!r}")
        block = BasicBlock if self.block == "basic" else Bottleneck
        for i, (num_blocks, width) in enumerate(zip(self.stage_sizes, self.widths, strict=True)):
            for j in range(num_blocks):
                strides = 2 if i > 0 and j == 0 else 1
                x = block(
                    width,
                    strides,
                    self.activation,
                    self.beta,
                    self.bn_momentum,
                    self.dtype,
                    name=f"layer{i + 1}_block{j + 1}",
                )(x, train)
        x = jnp.mean(x, axis=(1, 2))
        x = nn.Dense(self.num_classes, dtype=dtype, name="logits")(x)
        return tap(self, "logits_out", x.astype(jnp.float32))


ResNet18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), widths=(64, 128, 256, 512))
ResNet50 = functools.partial(
    ResNet, stage_sizes=(3, 4, 6, 3), widths=(64, 128, 256, 512), block="bottleneck"
)
