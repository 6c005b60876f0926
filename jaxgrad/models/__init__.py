"""Flax models and adapters to the ``logit_fn(params, x)`` contract."""

from jaxgrad._taps import tap
from jaxgrad.models.adapters import (
    init_variables,
    linen_logit_fn,
    nnx_logit_fn,
    nnx_train_logit_fn,
    zero_perturbations,
)
from jaxgrad.models.fast import fast_logit_fn, tiled_max_pool
from jaxgrad.models.layers import (
    conv_general_dilated,
    get_activation,
    max_pool_2x2,
    second_order,
    softplus,
)
from jaxgrad.models.mnist import MLP, MnistCNN, truncated_normal_fan_in
from jaxgrad.models.registry import MODELS, get_model
from jaxgrad.models.resnet import BasicBlock, Bottleneck, ResNet, ResNet18, ResNet50
from jaxgrad.models.tapping import (
    hooked_logit_fn,
    identity_tap,
    module_biases,
    nnx_biases,
    tap_shapes,
)
from jaxgrad.models.vgg import VGG, VGG11

__all__ = [
    "MLP",
    "MODELS",
    "BasicBlock",
    "Bottleneck",
    "MnistCNN",
    "ResNet",
    "ResNet18",
    "ResNet50",
    "VGG",
    "VGG11",
    "conv_general_dilated",
    "fast_logit_fn",
    "get_activation",
    "get_model",
    "hooked_logit_fn",
    "identity_tap",
    "init_variables",
    "linen_logit_fn",
    "max_pool_2x2",
    "module_biases",
    "nnx_biases",
    "nnx_logit_fn",
    "nnx_train_logit_fn",
    "second_order",
    "softplus",
    "tap_shapes",
    "tap",
    "tiled_max_pool",
    "truncated_normal_fan_in",
    "zero_perturbations",
]
