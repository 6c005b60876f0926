"""The MNIST models of the sanity-check papers (Adebayo et al. 2018, arXiv 1810.03292).

Both follow ``adebayoj/sanity_checks_saliency`` (``src/train_cnn_models.py``,
``src/train_mlp_models.py``): layer names, widths and initializers are the same, so the
cascading-randomization orders of the paper (CNN ``softmax_linear, fc1, hidden2, hidden1``;
MLP ``logits, hidden3, hidden2, hidden1``) name Flax parameter subtrees directly. Both take
any image size ``[B, H, W, C]`` (28x28 MNIST, 8x8 digits, 56x28 BlockMNIST, ...).

Every layer's pre-activation output (the value carrying its bias) is tapped as
``<layer>_out`` and every activation as ``<layer>_act`` (see :func:`layers.tap`), so FullGrad
and Grad-CAM can take gradients with respect to them through the ``perturbations``
collection.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgrad._validation import (
    POSITIVE,
    POSITIVE_INT,
    check_fields,
    check_images,
    checked,
    positive_ints,
)
from jaxgrad.models.layers import (
    Activation,
    conv_general_dilated,
    get_activation,
    max_pool_2x2,
    tap,
)


@checked(scale=POSITIVE)
def truncated_normal_fan_in(scale: float = 2.0) -> nn.initializers.Initializer:
    """Truncated normal (at 2 std) with std ``scale / sqrt(fan_in)``, as TF's ``truncated_normal``.

    The std is that of the untruncated distribution, as in the sanity-checks MLP code.
    """

    def init(key, shape, dtype=jnp.float32):
        fan_in = math.prod(shape[:-1])
        std = scale / math.sqrt(fan_in)
        return std * jax.random.truncated_normal(key, -2.0, 2.0, shape, dtype)

    return init


def _expected_features(module: nn.Module, layer: str, axis: int) -> int | None:
    """Input size the already-initialised ``layer`` expects, or ``None`` while initialising."""
    if module.is_initializing():
        return None
    params = module.variables.get("params", {})
    if layer not in params:
        return None
    return params[layer]["kernel"].shape[axis]


class MnistCNN(nn.Module):
    """conv5x5x32 + act + max-pool 2, conv5x5x64 + act + max-pool 2, dense 1024 + act, dense K.

    Attributes:
      num_classes: number of logits K.
      features: the two convolutions' widths (the paper's ``(32, 64)``).
      dense: the hidden dense layer's width (the paper's 1024).
      activation: ``"relu"`` (the paper's), ``"softplus"`` (with ``beta``) or a callable.
      beta: softplus sharpness.
      kernel_init, bias_init: the paper's truncated normal (std 0.1) and constant 0.1.
      pooling: ``"reshape"`` (reshape + max: 1.5x faster input-gradients on XLA CPU; a
        tied window splits its gradient equally) or ``"reduce_window"`` (``nn.max_pool``: the
        whole gradient goes to one tied input, as in PyTorch and TensorFlow), the same forward
        pass; or ``"avg"`` (2x2 average pooling): with a smooth activation the network is then
        smooth everywhere, with no max-pooling kinks, which score matching's finite-difference
        (Taylor) trace estimate would otherwise see.
    """

    num_classes: int = 10
    features: tuple[int, int] = (32, 64)
    dense: int = 1024
    activation: str | Activation = "relu"
    beta: float = 1.0
    kernel_init: nn.initializers.Initializer = nn.initializers.truncated_normal(stddev=0.1)
    bias_init: nn.initializers.Initializer = nn.initializers.constant(0.1)
    pooling: str = "reshape"

    def __post_init__(self):
        check_fields(
            self,
            num_classes=POSITIVE_INT,
            features=positive_ints,
            dense=POSITIVE_INT,
            beta=POSITIVE,
        )
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Logits ``[B, K]`` of images ``x: [B, H, W, C]`` (``train`` is accepted for uniformity)."""
        del train  # no dropout or batch statistics
        check_images(x, "x", _expected_features(self, "hidden1", -2))
        act = get_activation(self.activation, self.beta)
        if self.pooling not in ("reshape", "reduce_window", "avg"):
            raise ValueError(
                f"pooling must be 'reshape', 'reduce_window' or 'avg', got {self.pooling!r}"
            )
        dense_kw = dict(kernel_init=self.kernel_init, bias_init=self.bias_init)
        if len(self.features) != 2:
            raise ValueError(f"features must be two widths, got {self.features!r}")
        for name, width in zip(("hidden1", "hidden2"), self.features, strict=True):
            x = nn.Conv(
                width,
                (5, 5),
                padding="SAME",
                name=name,
                conv_general_dilated=conv_general_dilated,
                **dense_kw,
            )(x)
            x = tap(self, f"{name}_out", x)
            x = tap(self, f"{name}_act", act(x))
            if self.pooling == "reshape":
                x = max_pool_2x2(x)
            elif self.pooling == "avg":
                x = nn.avg_pool(x, (2, 2), strides=(2, 2), padding="VALID")
            else:
                x = nn.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")
        x = x.reshape(x.shape[0], -1)
        expected = _expected_features(self, "fc1", 0)
        if expected is not None and x.shape[-1] != expected:
            raise ValueError(
                f"x has a different image size from the one the params were built for: "
                f"fc1 expects {expected} features, got {x.shape[-1]}"
            )
        x = nn.Dense(self.dense, name="fc1", **dense_kw)(x)
        x = tap(self, "fc1_out", x)
        x = tap(self, "fc1_act", act(x))
        x = nn.Dense(self.num_classes, name="softmax_linear", **dense_kw)(x)
        return tap(self, "softmax_linear_out", x)


class MLP(nn.Module):
    """Fully connected ReLU network, 784-2500-1500-500-10 for MNIST, on flattened inputs.

    Attributes:
      num_classes: number of logits K.
      hidden: widths of the hidden layers, named ``hidden1, hidden2, ...``; the output layer
        is ``logits``.
      activation, beta: as for :class:`MnistCNN`.
      kernel_init: truncated normal with std ``2 / sqrt(fan_in)`` (the paper's code);
        biases start at zero.
    """

    num_classes: int = 10
    hidden: tuple[int, ...] = (2500, 1500, 500)
    activation: str | Activation = "relu"
    beta: float = 1.0
    kernel_init: nn.initializers.Initializer = truncated_normal_fan_in(2.0)
    bias_init: nn.initializers.Initializer = nn.initializers.zeros

    def __post_init__(self):
        check_fields(self, num_classes=POSITIVE_INT, beta=POSITIVE)
        if self.hidden:  # () is a linear model
            check_fields(self, hidden=positive_ints)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Logits ``[B, K]`` of inputs ``x: [B, *S]`` (flattened to ``[B, prod(S)]``)."""
        del train
        if x.ndim < 2:
            raise ValueError(f"x must have a batch axis and features [B, *S], got shape {x.shape}")
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise TypeError(f"x must be a floating-point array, got dtype {x.dtype}")
        x = x.reshape(x.shape[0], -1)
        expected = _expected_features(self, "hidden1", 0)
        if expected is not None and x.shape[-1] != expected:
            raise ValueError(f"x must have {expected} features per example, got {x.shape[-1]}")
        act = get_activation(self.activation, self.beta)
        kw = dict(kernel_init=self.kernel_init, bias_init=self.bias_init)
        for i, width in enumerate(self.hidden, start=1):
            x = nn.Dense(width, name=f"hidden{i}", **kw)(x)
            x = tap(self, f"hidden{i}_out", x)
            x = tap(self, f"hidden{i}_act", act(x))
        x = nn.Dense(self.num_classes, name="logits", **kw)(x)
        return tap(self, "logits_out", x)
