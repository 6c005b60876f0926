"""Data sets as numpy arrays and batch iterators.

``load_dataset(source, split)`` accepts ``digits`` (the offline default), ``idx:<folder>``
(MNIST-format files) and ``tfds:<name>`` (tensorflow-datasets).
"""

from jaxgrad.data.augment import (
    AUGMENTATIONS,
    cifar_augment,
    crop_augment,
    get_augmentation,
    random_crop,
    random_flip,
)
from jaxgrad.data.base import Dataset, make_dataset, validate_dataset
from jaxgrad.data.block_mnist import make_block_mnist, signal_mask
from jaxgrad.data.digits import load_digits
from jaxgrad.data.idx import load_idx, read_idx
from jaxgrad.data.iterators import (
    batches,
    epoch_order,
    eval_batches,
    get_batch,
    host_shard,
    shard_indices,
    steps_per_epoch,
)
from jaxgrad.data.sources import load_dataset, source_shape
from jaxgrad.data.synthetic import make_signal_coordinate
from jaxgrad.data.tfds import load_tfds

__all__ = [
    "AUGMENTATIONS",
    "Dataset",
    "batches",
    "cifar_augment",
    "crop_augment",
    "epoch_order",
    "eval_batches",
    "get_augmentation",
    "get_batch",
    "host_shard",
    "load_dataset",
    "load_digits",
    "load_idx",
    "load_tfds",
    "make_block_mnist",
    "make_dataset",
    "make_signal_coordinate",
    "random_crop",
    "random_flip",
    "read_idx",
    "shard_indices",
    "signal_mask",
    "source_shape",
    "steps_per_epoch",
    "validate_dataset",
]
