"""Flax models and adapters to the ``logit_fn(params, x)`` contract."""

from __future__ import annotations

from typing import Any

import flax.linen as nn

from jaxgrad.models.adapters import init_variables, linen_logit_fn, nnx_logit_fn, zero_perturbations
from jaxgrad.models.layers import get_activation, max_pool_2x2, softplus, tap
from jaxgrad.models.mnist import MLP, MnistCNN, truncated_normal_fan_in
from jaxgrad.models.resnet import BasicBlock, ResNet, ResNet18

_MODELS = {"cnn": MnistCNN, "mlp": MLP, "resnet18": ResNet18}


def get_model(name: str, **kwargs: Any) -> nn.Module:
    """A model by name: ``cnn`` (:class:`MnistCNN`), ``mlp`` (:class:`MLP`), ``resnet18``."""
    if name not in _MODELS:
        raise ValueError(f"model name must be one of {sorted(_MODELS)}, got {name!r}")
    return _MODELS[name](**kwargs)


__all__ = [
    "MLP",
    "BasicBlock",
    "MnistCNN",
    "ResNet",
    "ResNet18",
    "get_activation",
    "get_model",
    "init_variables",
    "linen_logit_fn",
    "max_pool_2x2",
    "nnx_logit_fn",
    "softplus",
    "tap",
    "truncated_normal_fan_in",
    "zero_perturbations",
]
