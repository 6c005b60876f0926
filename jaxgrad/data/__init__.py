"""Data sets as numpy arrays and batch iterators.

``load_dataset(source, split)`` accepts ``digits`` (the offline default), ``idx:<folder>``
(MNIST-format files) and ``tfds:<name>`` (tensorflow-datasets).
"""

from __future__ import annotations

from jaxgrad.data.augment import cifar_augment, random_crop, random_flip
from jaxgrad.data.base import Dataset, make_dataset, validate_dataset
from jaxgrad.data.block_mnist import make_block_mnist, signal_mask
from jaxgrad.data.digits import load_digits
from jaxgrad.data.idx import load_idx, read_idx
from jaxgrad.data.iterators import batches, epoch_order, eval_batches, get_batch, steps_per_epoch
from jaxgrad.data.tfds import load_tfds


def load_dataset(source: str, split: str = "train", **kwargs) -> Dataset:
    """Loads a split of a data set named by ``source``.

    Args:
      source: ``"digits"``, ``"idx:<folder>"`` (e.g. ``idx:../shared/data/mnist``) or
        ``"tfds:<name>"`` (``mnist``, ``fashion_mnist``, ``cifar10``, ``cifar100``, ``svhn``).
      split: ``"train"`` or ``"test"`` (tfds accepts any split string).
      **kwargs: passed to the loader (``num_train`` for idx, ``data_dir``/``download`` for tfds).

    Returns:
      ``{"image": float32 [N, H, W, C] in [0, 1], "label": int32 [N]}``.
    """
    if source == "digits":
        return load_digits(split, **kwargs)
    if source.startswith("idx:"):
        return load_idx(source[len("idx:") :], split, **kwargs)
    if source.startswith("tfds:"):
        return load_tfds(source[len("tfds:") :], split, **kwargs)
    raise ValueError(f"source must be 'digits', 'idx:<folder>' or 'tfds:<name>', got {source!r}")


__all__ = [
    "Dataset",
    "batches",
    "cifar_augment",
    "epoch_order",
    "eval_batches",
    "get_batch",
    "load_dataset",
    "load_digits",
    "load_idx",
    "load_tfds",
    "make_block_mnist",
    "make_dataset",
    "random_crop",
    "random_flip",
    "read_idx",
    "signal_mask",
    "steps_per_epoch",
    "validate_dataset",
]
