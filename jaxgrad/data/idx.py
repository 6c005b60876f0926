"""MNIST-format (IDX) files from a folder, gzip-compressed or not.

A folder holds ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each optionally ending in
``.gz``. When the folder holds only the ``t10k`` files (a test-set-only copy of MNIST),
the 10,000 test images are split into a fixed train part (the first ``num_train``, 8,000 by
default) and a test part (the rest).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from jaxgrad._validation import POSITIVE_INT, checked
from jaxgrad.data.base import Dataset, make_dataset

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Reads one IDX file (``.gz`` or plain) into a numpy array.

    Raises:
      FileNotFoundError: if neither ``path`` nor ``path + ".gz"`` exists.
      ValueError: on a bad magic number or a size that does not match the header.
    """
    path = Path(path)
    candidates = [path] if path.suffix == ".gz" else [path, path.with_name(path.name + ".gz")]
    found = next((p for p in candidates if p.is_file()), None)
    if found is None:
        raise FileNotFoundError(f"IDX file not found: {' or '.join(str(p) for p in candidates)}")
    raw = gzip.open(found).read() if found.suffix == ".gz" else found.read_bytes()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise ValueError(f"{found}: not an IDX file (bad magic number {raw[:4].hex()})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_DTYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(
            f"{found}: header says shape {shape} ({expected} bytes) but the file holds "
            f"{len(raw) - header} bytes of data"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def _pair(folder: Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(folder / f"{prefix}-images-idx3-ubyte")
    labels = read_idx(folder / f"{prefix}-labels-idx1-ubyte")
    if images.ndim != 3:
        raise ValueError(f"{folder}/{prefix}-images: expected [N, H, W], got shape {images.shape}")
    if labels.shape != images.shape[:1]:
        raise ValueError(
            f"{folder}/{prefix}: {images.shape[0]} images but labels of shape {labels.shape}"
        )
    return images[..., None], labels


def _has(folder: Path, prefix: str) -> bool:
    name = f"{prefix}-images-idx3-ubyte"
    return (folder / name).is_file() or (folder / f"{name}.gz").is_file()


@checked(num_train=POSITIVE_INT, num_classes=POSITIVE_INT)
def load_idx(
    folder: str | Path, split: str = "train", *, num_train: int = 8000, num_classes: int = 10
) -> Dataset:
    """Loads a split of an MNIST-format data set from ``folder``.

    Args:
      folder: directory of IDX files.
      split: ``"train"`` or ``"test"``.
      num_train: when the folder has only ``t10k`` files, how many of them (the first ones)
        form the train split; the rest are the test split.
      num_classes: labels must lie in ``[0, num_classes)``.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"IDX folder not found: {folder}")
    name = f"idx:{folder}/{split}"
    if _has(folder, "train"):
        images, labels = _pair(folder, "train" if split == "train" else "t10k")
    else:
        images, labels = _pair(folder, "t10k")
        if not 0 < num_train < len(images):
            raise ValueError(f"num_train must lie in (0, {len(images)}), got {num_train}")
        sl = slice(None, num_train) if split == "train" else slice(num_train, None)
        images, labels = images[sl], labels[sl]
    return make_dataset(images, labels, name, num_classes)
