"""BlockMNIST construction and the localisation metrics."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxgrad.data import eval_batches, load_dataset, make_block_mnist, signal_mask
from jaxgrad.data.block_mnist import default_null_patch
from jaxgrad.evaluation import block_localization


def test_block_mnist_from_digits_places_digit_and_null_patch():
    digits = load_dataset("digits", "test")
    data = make_block_mnist(digits, seed=1)
    n = len(digits["label"])
    assert data["image"].shape == (n, 16, 8, 1)
    np.testing.assert_array_equal(data["label"], digits["label"])
    patch = default_null_patch(8, 8, 1)
    for i in range(n):
        sig, null = (
            (slice(0, 8), slice(8, 16)) if data["signal_top"][i] else (slice(8, 16), slice(0, 8))
        )
        np.testing.assert_array_equal(data["image"][i, sig], digits["image"][i])
        np.testing.assert_array_equal(data["image"][i, null], patch)
    assert 0.35 < data["signal_top"].mean() < 0.65  # random per example
    np.testing.assert_array_equal(
        make_block_mnist(digits, seed=1)["signal_top"], data["signal_top"]
    )
    top = make_block_mnist(digits, top=True)
    assert top["signal_top"].all()
    np.testing.assert_array_equal(top["image"][:, :8], digits["image"])
    # Batches keep the signal flags aligned with the images.
    b = next(iter(eval_batches(data, 32)))
    np.testing.assert_array_equal(b["signal_top"], data["signal_top"][:32])


def test_block_mnist_from_mnist_is_56_by_28(mnist_dir):
    mnist = load_dataset(f"idx:{mnist_dir}", "test")
    data = make_block_mnist({k: v[:10] for k, v in mnist.items()})
    assert data["image"].shape == (10, 56, 28, 1)


def test_bad_arguments_are_named():
    digits = load_dataset("digits", "test")
    with pytest.raises(ValueError, match="null_patch must have the digits' shape"):
        make_block_mnist(digits, null_patch=np.zeros((4, 4, 1)))
    with pytest.raises(ValueError, match="p_top"):
        make_block_mnist(digits, p_top=1.5)


def test_localization_metrics_by_hand():
    signal_top = np.array([True, False])
    mask = signal_mask(signal_top, (4, 2))
    np.testing.assert_array_equal(mask[0], [[1, 1], [1, 1], [0, 0], [0, 0]])
    a = np.zeros((2, 4, 2, 1), np.float32)
    a[0, 0, 0] = 3.0  # signal block of example 0
    a[0, 3, 1] = -1.0  # null block
    a[1, 0, 0] = 2.0  # null block of example 1 (signal at the bottom)
    a[1, 2, 1] = 2.0  # signal
    out = block_localization(jnp.asarray(a), mask, top_k=2)
    np.testing.assert_allclose(out["signal_mass_abs"], [0.75, 0.5])
    np.testing.assert_allclose(out["signal_mass_pos"], [1.0, 0.5])
    np.testing.assert_allclose(out["top_k_in_null"], [0.5, 0.5])
    out = block_localization(jnp.asarray(a), mask, top_k=1)
    np.testing.assert_allclose(out["top_k_in_null"][0], 0.0)
    with pytest.raises(ValueError, match="must match"):
        block_localization(jnp.asarray(a), mask[:, :2])
    with pytest.raises(ValueError, match="top_k must select"):
        block_localization(jnp.asarray(a), mask, top_k=0)
