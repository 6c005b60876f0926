"""Shuffling batch iterators with explicit keys, padding and masks.

A batch is a pure function of ``(key, step)``: epoch ``e = step // steps_per_epoch`` is
shuffled by the permutation drawn from ``fold_in(key, e)``, and the step's position inside the
epoch picks the slice. Resuming at a step therefore needs nothing but the step (which the
train state holds), and several processes of a pod each take their own contiguous part of
the same global batch.

The last batch of an epoch is padded up to ``batch_size`` with examples from the start of the
same permutation and carries ``mask == 0`` on them, so shapes never change (no
recompilation), no example is dropped, and losses weight padded rows by zero. Padding with
real images instead of zeros keeps BatchNorm's batch statistics close to the data's.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import jax
import numpy as np

from jaxgrad._validation import (
    BOOL,
    KEY,
    NONNEGATIVE_INT,
    POSITIVE_INT,
    checked,
    integer,
)
from jaxgrad.data.base import Dataset


@checked(num_examples=NONNEGATIVE_INT, index=NONNEGATIVE_INT, count=POSITIVE_INT)
def shard_indices(num_examples: int, index: int, count: int) -> np.ndarray:
    """The examples of host ``index`` of ``count``: every ``count``-th from ``index``.

    Every host gets ``num_examples // count`` of them (up to ``count - 1`` examples are left
    out), so that all hosts run the same number of steps per epoch.
    """
    if not 0 <= index < count:
        raise ValueError(f"shard index must lie in [0, count) = [0, {count}), got {index}")
    per_host = num_examples // count
    if per_host == 0:
        raise ValueError(
            f"num_examples ({num_examples}) cannot be split over count = {count} hosts"
        )
    return index + count * np.arange(per_host)


@checked(index=NONNEGATIVE_INT, count=POSITIVE_INT)
def host_shard(data: Dataset, index: int, count: int) -> Dataset:
    """Host ``index``'s shard of a split already in memory (see :func:`shard_indices`)."""
    idx = shard_indices(len(data["label"]), index, count)
    return {k: v[idx] for k, v in data.items()}


@checked(num_examples=POSITIVE_INT, batch_size=POSITIVE_INT)
def steps_per_epoch(num_examples: int, batch_size: int) -> int:
    """Number of (padded) batches that cover ``num_examples`` once."""
    return math.ceil(num_examples / batch_size)


@checked(key=KEY, epoch=NONNEGATIVE_INT, num_examples=POSITIVE_INT)
def epoch_order(key: jax.Array, epoch: int, num_examples: int, shuffle: bool = True) -> np.ndarray:
    """Order of the examples in ``epoch``: a permutation from ``fold_in(key, epoch)``."""
    if not shuffle:
        return np.arange(num_examples)
    return np.asarray(jax.random.permutation(jax.random.fold_in(key, epoch), num_examples))


def batch_indices(
    order: np.ndarray, position: int, batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices and mask of batch ``position`` of an epoch with the given ``order``."""
    n = len(order)
    idx = np.arange(position * batch_size, (position + 1) * batch_size)
    mask = idx < n
    return order[idx % n], mask


def _check(data: Dataset, batch_size: int, process_index: int, process_count: int) -> int:
    n = len(data["label"])
    if n == 0:
        raise ValueError("data is empty (no labels)")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index must lie in [0, {process_count}), got {process_index}")
    if batch_size % process_count:
        raise ValueError(
            f"batch_size ({batch_size}) must be divisible by the process count ({process_count})"
        )
    return n


@checked(
    step=NONNEGATIVE_INT,
    key=KEY,
    batch_size=POSITIVE_INT,
    process_index=NONNEGATIVE_INT,
    process_count=POSITIVE_INT,
)
def get_batch(
    data: Dataset,
    step: int,
    *,
    key: jax.Array,
    batch_size: int,
    shuffle: bool = True,
    process_index: int = 0,
    process_count: int = 1,
) -> dict[str, np.ndarray]:
    """The batch of global step ``step`` (this process's part of it).

    Returns:
      ``{"image": [b, ...], "label": [b], "mask": float32 [b]}`` with
      ``b = batch_size // process_count``.
    """
    n = _check(data, batch_size, process_index, process_count)
    spe = steps_per_epoch(n, batch_size)
    order = epoch_order(key, step // spe, n, shuffle)
    return _take(data, order, step % spe, batch_size, process_index, process_count)


def _take(data, order, position, batch_size, process_index, process_count):
    idx, mask = batch_indices(order, position, batch_size)
    local = batch_size // process_count
    sl = slice(process_index * local, (process_index + 1) * local)
    idx, mask = idx[sl], mask[sl]
    batch = {k: v[idx] for k, v in data.items()}
    batch["mask"] = mask.astype(np.float32)
    return batch


@checked(
    key=KEY,
    batch_size=POSITIVE_INT,
    start_step=NONNEGATIVE_INT,
    num_steps=integer(0, optional=True),
    process_index=NONNEGATIVE_INT,
    process_count=POSITIVE_INT,
    shuffle=BOOL,
)
def batches(
    data: Dataset,
    *,
    key: jax.Array,
    batch_size: int,
    start_step: int = 0,
    num_steps: int | None = None,
    shuffle: bool = True,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[dict[str, np.ndarray]]:
    """Yields the batches of steps ``start_step, start_step + 1, ...`` (forever if ``num_steps`` is None).

    Same content as :func:`get_batch` for every step, with each epoch's permutation drawn once.

    Args:
      data: a data set split, ``{"image": [N, ...], "label": [N], ...}``.
      key: the data key; the same key gives the same order on every machine.
      batch_size: global batch size (over all processes).
      start_step: the first step to yield, e.g. a restored train state's step.
      num_steps: how many batches to yield.
      shuffle: reshuffle every epoch (otherwise the data set order).
      process_index, process_count: this process's part of each global batch.
    """
    n = _check(data, batch_size, process_index, process_count)
    spe = steps_per_epoch(n, batch_size)
    step, epoch, order = start_step, None, None
    end = None if num_steps is None else start_step + num_steps
    while end is None or step < end:
        if step // spe != epoch:
            epoch = step // spe
            order = epoch_order(key, epoch, n, shuffle)
        yield _take(data, order, step % spe, batch_size, process_index, process_count)
        step += 1


@checked(batch_size=POSITIVE_INT, process_index=NONNEGATIVE_INT, process_count=POSITIVE_INT)
def eval_batches(
    data: Dataset, batch_size: int, *, process_index: int = 0, process_count: int = 1
) -> Iterator[dict[str, np.ndarray]]:
    """One pass over ``data`` in order, padded and masked (for evaluation)."""
    n = _check(data, batch_size, process_index, process_count)
    order = np.arange(n)
    for position in range(steps_per_epoch(n, batch_size)):
        yield _take(data, order, position, batch_size, process_index, process_count)
