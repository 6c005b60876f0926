"""Shah, Jain & Netrapalli's synthetic data (v1): one signal coordinate among ``dim``.

Each example is ``x = s e_j`` with a label ``y ~ Bernoulli(1/2)``, ``s = 2y - 1``, and the
signal coordinate ``j = 0`` with probability ``bias_prob``, otherwise uniform over
``1 ... dim - 1`` (their ``SemiRandomSignalCoordinate(input_dim=10, num_signal=1,
bias_prob=0.1)``). Every coordinate can carry the label, so a classifier must read all of
them; the question is whether its input-gradient singles out the instance's signal.
"""

from __future__ import annotations

import numpy as np

from jaxgrad._validation import FRACTION, NONNEGATIVE_INT, POSITIVE_INT, checked
from jaxgrad.data.base import Dataset


@checked(num_examples=POSITIVE_INT, dim=POSITIVE_INT, bias_prob=FRACTION, seed=NONNEGATIVE_INT)
def make_signal_coordinate(
    num_examples: int, *, dim: int = 10, bias_prob: float = 0.1, seed: int = 0
) -> Dataset:
    """``num_examples`` draws of the synthetic data.

    Args:
      num_examples: how many.
      dim: the input dimension (10 in the paper).
      bias_prob: the probability that coordinate 0 carries the signal.
      seed: numpy seed.

    Returns:
      ``{"image": [N, 1, dim, 1] float32 in {-1, 0, 1}, "label": [N] int32 in {0, 1},
      "signal": [N] int32}`` (the signal coordinate). Unlike the image sets, values lie in
      ``[-1, 1]``.

    Example:
      >>> d = make_signal_coordinate(4, seed=1)
      >>> d["image"].shape, sorted(set(d["image"].ravel().tolist())) <= [-1.0, 0.0, 1.0]
      ((4, 1, 10, 1), True)
    """
    if num_examples < 1 or dim < 2:
        raise ValueError(f"need num_examples >= 1 and dim >= 2, got {num_examples} and {dim}")
    if not 0.0 <= bias_prob <= 1.0:
        raise ValueError(f"bias_prob must lie in [0, 1], got {bias_prob}")
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 2, num_examples)
    first = rng.random(num_examples) < bias_prob
    signal = np.where(first, 0, rng.integers(1, dim, num_examples))
    x = np.zeros((num_examples, dim), np.float32)
    x[np.arange(num_examples), signal] = 2.0 * label - 1.0
    return {
        "image": x.reshape(num_examples, 1, dim, 1),
        "label": label.astype(np.int32),
        "signal": signal.astype(np.int32),
    }
