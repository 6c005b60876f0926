"""scikit-learn's 8x8 handwritten digits: the offline default data set.

1,797 images of 10 classes, pixel values 0..16 scaled to [0, 1], shaped ``[N, 8, 8, 1]``.
The train/test split is fixed (a permutation from a fixed seed, 360 test images) so that
every run, test and machine sees the same split.
"""

from __future__ import annotations

import numpy as np

from jaxgrad.data.base import Dataset, make_dataset

NUM_TEST = 360
_SPLIT_SEED = 0


def load_digits(split: str = "train") -> Dataset:
    """Loads a split (``"train"``: 1,437 images, ``"test"``: 360) of the digits data set."""
    from sklearn.datasets import load_digits as sk_load_digits

    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    bunch = sk_load_digits()
    images = (bunch.images / 16.0).astype(np.float32)[..., None]
    order = np.random.default_rng(_SPLIT_SEED).permutation(len(images))
    idx = order[NUM_TEST:] if split == "train" else order[:NUM_TEST]
    return make_dataset(images[idx], bunch.target[idx], f"digits/{split}", num_classes=10)
