"""``load_dataset(source, split)``: one entry point for every data source, named by a string."""

from __future__ import annotations

from jaxgrad._validation import as_int
from jaxgrad.data.base import Dataset
from jaxgrad.data.digits import load_digits
from jaxgrad.data.idx import load_idx
from jaxgrad.data.iterators import host_shard
from jaxgrad.data.tfds import TFDS_SHAPES, load_tfds


def load_dataset(
    source: str, split: str = "train", *, shard: tuple[int, int] | None = None, **kwargs
) -> Dataset:
    """Loads a split of a data set named by ``source``.

    Args:
      source: ``"digits"``, ``"idx:<folder>"`` (a folder of MNIST-format files) or
        ``"tfds:<name>"`` (``mnist``, ``fashion_mnist``, ``cifar10``, ``cifar100``, ``svhn``).
      split: ``"train"`` or ``"test"`` (tfds accepts any split string).
      shard: ``(index, count)``: only host ``index``'s share of the split (for ``fit(...,
        host_local=True)`` on a pod): every ``count``-th example from ``index``, the same
        number on every host (up to ``count - 1`` examples are left out);
        tensorflow-datasets reads only those examples, the in-memory sources load the split
        and keep them (``jaxgrad.data.host_shard``).
      **kwargs: passed to the loader (``num_train`` for idx, ``data_dir``/``download`` for tfds).

    Returns:
      ``{"image": float32 [N, H, W, C] in [0, 1], "label": int32 [N]}``.
    """
    if shard is not None:
        try:
            index, count = shard
            index, count = (
                as_int(index, "shard's index", low=0),
                as_int(count, "shard's count", low=1),
            )
        except (TypeError, ValueError) as e:
            raise ValueError(
                f"shard must be (index, count) with count >= 1, got {shard!r}: {e}"
            ) from None
        shard = (index, count)
        if not 0 <= index < count:
            raise ValueError(f"shard index must lie in [0, {count}), got {index}")
    if source.startswith("tfds:"):
        return load_tfds(source[len("tfds:") :], split, shard=shard, **kwargs)
    if source == "digits":
        data = load_digits(split, **kwargs)
    elif source.startswith("idx:"):
        data = load_idx(source[len("idx:") :], split, **kwargs)
    else:
        raise ValueError(
            f"source must be 'digits', 'idx:<folder>' or 'tfds:<name>', got {source!r}"
        )
    return data if shard is None else host_shard(data, *shard)


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
