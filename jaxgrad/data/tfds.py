"""Full-size data sets through tensorflow-datasets, imported lazily.

Reads with ``tfds.data_source`` (random-access ArrayRecord files, no TensorFlow needed at
read time). Preparing a data set for the first time (``download=True``) uses TensorFlow,
which the ``tfds`` extra installs. Supported: MNIST, Fashion-MNIST, CIFAR-10/100, SVHN (any
other image classification data set with ``image`` and ``label`` features works too).
Tests use ``tfds.testing.mock_data`` and never download.
"""

from __future__ import annotations

import os

import numpy as np

from jaxgrad.data.base import Dataset, make_dataset
from jaxgrad.data.iterators import shard_indices

OFFLINE = (
    "or, offline, use MNIST-format files instead: load_dataset('idx:DIR') "
    "(in an experiment, --config.data.source=idx:DIR)"
)
INSTALL = "pip install -e '.[tfds]' in your clone (TensorFlow prepares the files)"


def _offline(name: str) -> str:
    """The offline alternative, for the MNIST family only."""
    return f"; {OFFLINE}" if name in ("mnist", "fashion_mnist") else ""


# Our names -> (tfds name, number of classes).
TFDS_NAMES = {
    "mnist": ("mnist", 10),
    "fashion_mnist": ("fashion_mnist", 10),
    "cifar10": ("cifar10", 10),
    "cifar100": ("cifar100", 100),
    "svhn": ("svhn_cropped", 10),
}

# The published sizes of the supported sets: (image shape, {split: examples}); lets a dry run
# size a full run before the data is prepared.
TFDS_SHAPES = {
    "mnist": ((28, 28, 1), {"train": 60_000, "test": 10_000}),
    "fashion_mnist": ((28, 28, 1), {"train": 60_000, "test": 10_000}),
    "cifar10": ((32, 32, 3), {"train": 50_000, "test": 10_000}),
    "cifar100": ((32, 32, 3), {"train": 50_000, "test": 10_000}),
    "svhn": ((32, 32, 3), {"train": 73_257, "test": 26_032}),
}


def load_tfds(
    name: str,
    split: str = "train",
    *,
    data_dir: str | None = None,
    download: bool = False,
    shard: tuple[int, int] | None = None,
) -> Dataset:
    """Loads a whole split of a tensorflow-datasets image classification data set into memory.

    Args:
      name: one of ``mnist, fashion_mnist, cifar10, cifar100, svhn`` or a tfds name.
      split: a tfds split string (``"train"``, ``"test"``, ``"train[:90%]"``, ...).
      data_dir: tfds data directory (default: tfds's own).
      download: download and prepare the data set if it is missing. Off by default so
        that nothing is fetched from the internet unless asked for.
      shard: ``(index, count)``: read only host ``index``'s share of the split (every
        ``count``-th example from ``index``, the same number on every host; see
        ``jaxgrad.data.shard_indices``), by index through the random-access data source, so
        a pod's host never reads the others' examples.
    """
    if shard is not None:
        try:
            index, count = (int(v) for v in shard)
        except (TypeError, ValueError):
            raise TypeError(
                f"shard must be an (index, count) pair of ints, got {shard!r}"
            ) from None
        if not 0 <= index < count:
            raise ValueError(f"shard (index, count) must have 0 <= index < count, got {shard!r}")
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"tfds:{name} needs tensorflow-datasets: {INSTALL}{_offline(name)}"
        ) from e
    tfds_name, num_classes = TFDS_NAMES.get(name, (name, None))
    try:
        source = tfds.data_source(tfds_name, split=split, data_dir=data_dir, download=download)
    except Exception as e:
        if download:
            raise
        where = data_dir or (
            f"$TFDS_DATA_DIR ({os.environ['TFDS_DATA_DIR']})"
            if os.environ.get("TFDS_DATA_DIR")
            else "tensorflow-datasets' data_dir (~/tensorflow_datasets by default)"
        )
        if name not in TFDS_NAMES:
            how = (
                f"tfds:{name} is none of jaxgrad's data sets ({', '.join(TFDS_NAMES)}); "
                "prepare it as its tensorflow-datasets page says (some need manual downloads)"
            )
        else:
            how = (
                f"Prepare it once on a machine with network access: {INSTALL}, then python "
                f"-c \"import tensorflow_datasets as tfds; tfds.builder('{tfds_name}')."
                f"download_and_prepare()\" (or load_dataset('tfds:{name}', download=True))"
            )
        raise FileNotFoundError(
            f"tfds:{name} (split {split!r}) is not prepared in {where} "
            f"[{type(e).__name__}: {e}]. {how}{_offline(name)}"
        ) from e
    indices = range(len(source)) if shard is None else shard_indices(len(source), *shard)
    examples = [source[int(i)] for i in indices]
    images = np.stack([np.asarray(ex["image"]) for ex in examples])
    labels = np.asarray([ex["label"] for ex in examples])
    if images.ndim == 3:
        images = images[..., None]
    where = "" if shard is None else f"[host {shard[0]} of {shard[1]}]"
    return make_dataset(images, labels, f"tfds:{name}/{split}{where}", num_classes)
