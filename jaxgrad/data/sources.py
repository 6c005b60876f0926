"""``load_dataset(source, split)``: one entry point for every data source, named by a string."""

from __future__ import annotations

from jaxgrad.data.base import Dataset
from jaxgrad.data.digits import load_digits
from jaxgrad.data.idx import load_idx
from jaxgrad.data.tfds import TFDS_SHAPES, load_tfds


def load_dataset(source: str, split: str = "train", **kwargs) -> Dataset:
    """Loads a split of a data set named by ``source``.

    Args:
      source: ``"digits"``, ``"idx:<folder>"`` (a folder of MNIST-format files) or
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


def source_shape(source: str, split: str = "train") -> tuple[int, tuple[int, ...]]:
    """``(number of examples, image shape)`` of a split, without loading it where possible.

    The supported tfds sets (``mnist``, ``fashion_mnist``, ``cifar10``, ``cifar100``,
    ``svhn``) come from their published sizes, so a full run can be sized (e.g. by an
    experiment's ``--dry_run``) before the data is prepared; other sources are loaded.
    """
    if source.startswith("tfds:") and source[len("tfds:") :] in TFDS_SHAPES:
        shape, sizes = TFDS_SHAPES[source[len("tfds:") :]]
        if split in sizes:
            return sizes[split], shape
    data = load_dataset(source, split)
    return len(data["label"]), tuple(data["image"].shape[1:])
