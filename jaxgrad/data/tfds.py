"""Full-size data sets through tensorflow-datasets, imported lazily.

Reads with ``tfds.data_source`` (random-access ArrayRecord files, no TensorFlow needed at
read time). Preparing a data set for the first time (``download=True``) uses TensorFlow,
which the ``tfds`` extra installs. Supported: MNIST, Fashion-MNIST, CIFAR-10/100, SVHN (any
other image classification data set with ``image`` and ``label`` features works too).
Tests use ``tfds.testing.mock_data`` and never download.
"""

from __future__ import annotations

import numpy as np

from jaxgrad.data.base import Dataset, make_dataset

# Our names -> (tfds name, number of classes).
TFDS_NAMES = {
    "mnist": ("mnist", 10),
    "fashion_mnist": ("fashion_mnist", 10),
    "cifar10": ("cifar10", 10),
    "cifar100": ("cifar100", 100),
    "svhn": ("svhn_cropped", 10),
}


def load_tfds(
    name: str, split: str = "train", *, data_dir: str | None = None, download: bool = False
) -> Dataset:
    """Loads a whole split of a tensorflow-datasets image classification data set into memory.

    Args:
      name: one of ``mnist, fashion_mnist, cifar10, cifar100, svhn`` or a tfds name.
      split: a tfds split string (``"train"``, ``"test"``, ``"train[:90%]"``, ...).
      data_dir: tfds data directory (default: tfds's own).
      download: download and prepare the data set if it is missing. Off by default so
        that nothing is fetched from the internet unless asked for.
    """
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "tfds data sets need tensorflow-datasets: pip install 'jaxgrad[tfds]'"
        ) from e
    tfds_name, num_classes = TFDS_NAMES.get(name, (name, None))
    source = tfds.data_source(tfds_name, split=split, data_dir=data_dir, download=download)
    examples = [source[i] for i in range(len(source))]
    images = np.stack([np.asarray(ex["image"]) for ex in examples])
    labels = np.asarray([ex["label"] for ex in examples])
    if images.ndim == 3:
        images = images[..., None]
    return make_dataset(images, labels, f"tfds:{name}/{split}", num_classes)
