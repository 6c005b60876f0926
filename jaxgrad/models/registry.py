"""Models by name, for configs: ``cnn``, ``mlp``, ``resnet18``, ``resnet50``, ``vgg``, ``vgg11``."""

from __future__ import annotations

from typing import Any

import flax.linen as nn

from jaxgrad.models.mnist import MLP, MnistCNN
from jaxgrad.models.resnet import ResNet18, ResNet50
from jaxgrad.models.vgg import VGG, VGG11

MODELS = {
    "cnn": MnistCNN,
    "mlp": MLP,
    "resnet18": ResNet18,
    "resnet50": ResNet50,
    "vgg": VGG,  # any ``layers`` (VGG-11's by default)
    "vgg11": VGG11,
}


def get_model(name: str, **kwargs: Any) -> nn.Module:
    """A model by name: ``cnn`` (:class:`MnistCNN`), ``mlp`` (:class:`MLP`), ``resnet18``, ``resnet50``, ``vgg`` (:class:`VGG`, any ``layers``), ``vgg11``."""
    if name not in MODELS:
        raise ValueError(f"model name must be one of {sorted(MODELS)}, got {name!r}")
    return MODELS[name](**kwargs)
