"""The in-memory data set format shared by every loader, and its validation.

A data set split is a dict of numpy arrays ``{"image": float32 [N, H, W, C] in [0, 1],
"label": int32 [N]}``. Loaders validate what they return, so a corrupt file or a source
with NaNs fails at load time with a message that names the problem, never inside a
compiled training step.
"""

from __future__ import annotations

import numpy as np

from jaxgrad._validation import OPTIONAL_POSITIVE_INT, checked

Dataset = dict[str, np.ndarray]


@checked(num_classes=OPTIONAL_POSITIVE_INT)
def validate_dataset(data: Dataset, name: str, num_classes: int | None = None) -> Dataset:
    """Checks a data set split and returns it unchanged.

    Args:
      data: ``{"image": [N, H, W, C], "label": [N]}``.
      name: how to call the data set in error messages (e.g. ``"digits/train"``).
      num_classes: if given, labels must lie in ``[0, num_classes)``.

    Raises:
      ValueError: on a missing key, wrong rank, mismatched lengths, NaN or infinite pixels,
        pixels outside ``[0, 1]``, or labels out of range.
      TypeError: on a non-float image or non-integer label array.
    """
    for key in ("image", "label"):
        if key not in data:
            raise ValueError(f"{name}: missing key {key!r} (have {sorted(data)})")
    image, label = data["image"], data["label"]
    if image.ndim != 4:
        raise ValueError(f"{name}: image must have rank 4 [N, H, W, C], got shape {image.shape}")
    if label.ndim != 1 or label.shape[0] != image.shape[0]:
        raise ValueError(
            f"{name}: label must have shape [{image.shape[0]}] to match image, got {label.shape}"
        )
    if not np.issubdtype(image.dtype, np.floating):
        raise TypeError(f"{name}: image must be floating point, got dtype {image.dtype}")
    if not np.issubdtype(label.dtype, np.integer):
        raise TypeError(f"{name}: label must be integer, got dtype {label.dtype}")
    finite = np.isfinite(image)
    if not finite.all():
        bad = np.flatnonzero(~finite.reshape(len(image), -1).all(axis=1))
        raise ValueError(
            f"{name}: image contains NaN or infinite values in {len(bad)} example(s), "
            f"first at index {bad[0]}"
        )
    if image.size and (image.min() < 0.0 or image.max() > 1.0):
        raise ValueError(
            f"{name}: image values must lie in [0, 1], got range [{image.min()}, {image.max()}]"
        )
    if label.size and label.min() < 0:
        raise ValueError(f"{name}: labels must be >= 0, got {label.min()}")
    if num_classes is not None and label.size and label.max() >= num_classes:
        raise ValueError(
            f"{name}: labels must lie in [0, {num_classes}), got a label {label.max()}"
        )
    return data


@checked(num_classes=OPTIONAL_POSITIVE_INT)
def make_dataset(
    image: np.ndarray, label: np.ndarray, name: str, num_classes: int | None
) -> Dataset:
    """Builds a validated split from raw arrays (uint8 images are scaled by 1/255)."""
    image = np.asarray(image)
    if image.dtype == np.uint8:
        image = image.astype(np.float32) / 255.0
    data = {"image": image.astype(np.float32, copy=False), "label": np.asarray(label)}
    validate_dataset(data, name, num_classes)
    data["label"] = data["label"].astype(np.int32)
    return data
