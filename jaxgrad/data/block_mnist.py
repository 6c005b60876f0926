"""BlockMNIST (our construction following Shah, Jain & Netrapalli 2021, arXiv 2102.12781 v3 §4).

Each image stacks two blocks of a digit's size vertically: the *signal block* (the digit,
which determines the label) and the *null block* (a fixed, label-independent patch). The
signal block sits on top or at the bottom at random per example (probability ``p_top`` of
top); ``top=True`` gives the paper's control BlockMNIST-Top, signal always on top. From
MNIST (28x28) the images are 56x28; from scikit-learn's digits (8x8), 16x8. The paper's code
and data were never released: the null patch, image size and classes here are our choices,
documented and parameterised here.
"""

from __future__ import annotations

import numpy as np

from jaxgrad._validation import FRACTION, NONNEGATIVE_INT, checked
from jaxgrad.data.base import Dataset, validate_dataset


def default_null_patch(height: int, width: int, channels: int = 1) -> np.ndarray:
    """A fixed patch: a hollow square (stroke ~1/10 of the side) centred in the block, value 1.

    It has digit-like strokes but carries no label information.
    """
    patch = np.zeros((height, width, channels), np.float32)
    t = max(1, round(min(height, width) / 10))
    top, left = height // 4, width // 4
    bottom, right = height - height // 4, width - width // 4
    patch[top:bottom, left : left + t] = 1.0
    patch[top:bottom, right - t : right] = 1.0
    patch[top : top + t, left:right] = 1.0
    patch[bottom - t : bottom, left:right] = 1.0
    return patch


@checked(seed=NONNEGATIVE_INT, p_top=FRACTION)
def make_block_mnist(
    data: Dataset,
    *,
    seed: int = 0,
    top: bool = False,
    p_top: float = 0.5,
    null_patch: np.ndarray | None = None,
) -> Dataset:
    """BlockMNIST from any digit data set ``{"image": [N, H, W, C], "label": [N]}``.

    Args:
      data: the digit source (MNIST, digits, ...).
      seed: seeds which block holds the signal, per example.
      top: BlockMNIST-Top (signal always on top).
      p_top: probability of the signal on top when ``top`` is False.
      null_patch: ``[H, W, C]``; :func:`default_null_patch` by default.

    Returns:
      ``{"image": [N, 2H, W, C], "label": [N], "signal_top": bool [N]}``.
    """
    validate_dataset(data, "data")
    images = np.asarray(data["image"], np.float32)
    if images.ndim != 4:
        raise ValueError(f"data's image must have rank 4 [N, H, W, C], got shape {images.shape}")
    n, h, w, c = images.shape
    if not 0 <= p_top <= 1:
        raise ValueError(f"p_top must lie in [0, 1], got {p_top}")
    patch = (
        default_null_patch(h, w, c) if null_patch is None else np.asarray(null_patch, np.float32)
    )
    if patch.shape != (h, w, c):
        raise ValueError(f"null_patch must have the digits' shape {(h, w, c)}, got {patch.shape}")
    if top:
        signal_top = np.ones(n, bool)
    else:
        signal_top = np.random.default_rng(seed).uniform(size=n) < p_top
    null = np.broadcast_to(patch, images.shape)
    upper = np.where(signal_top[:, None, None, None], images, null)
    lower = np.where(signal_top[:, None, None, None], null, images)
    return {
        "image": np.concatenate([upper, lower], axis=1),
        "label": np.asarray(data["label"], np.int32),
        "signal_top": signal_top,
    }


def signal_mask(signal_top: np.ndarray, image_shape: tuple[int, ...]) -> np.ndarray:
    """``bool [N, 2H, W]``: True on each example's signal block."""
    if np.asarray(signal_top).dtype != bool:
        raise TypeError(
            f"signal_top must be a bool array [N], got dtype {np.asarray(signal_top).dtype}"
        )
    signal_top = np.asarray(signal_top, bool)
    h2, w = image_shape[0], image_shape[1]
    if h2 % 2:
        raise ValueError(f"image_shape must have an even height (BlockMNIST), got {image_shape}")
    upper = np.zeros((h2, w), bool)
    upper[: h2 // 2] = True
    return np.where(signal_top[:, None, None], upper[None], ~upper[None])
