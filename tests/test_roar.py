"""ROAR / DiffROAR: masks keep exactly the right pixels; a random attribution's DiffROAR is
about 0 and an informative one's is positive, with real retraining on digits."""

import jax
import numpy as np
import pytest

from jaxgrad.data import load_dataset
from jaxgrad.evaluation import make_retrainer, mask_images, roar
from jaxgrad.models import MLP


def test_mask_keeps_exactly_the_top_or_bottom_pixels():
    rng = np.random.default_rng(0)
    x = rng.uniform(0.1, 1.0, size=(3, 4, 5, 2)).astype(np.float32)
    a = rng.normal(size=x.shape).astype(np.float32)
    sal = np.abs(a).sum(-1).reshape(3, -1)
    for keep in ("top", "bottom"):
        m = mask_images(x, a, 0.25, keep=keep, fill_value=0.0)
        kept = (m != 0).all(-1).reshape(3, -1)
        assert (kept.sum(1) == 5).all()
        order = np.argsort(-sal if keep == "top" else sal, axis=1, kind="stable")[:, :5]
        for b in range(3):
            assert set(np.flatnonzero(kept[b])) == set(order[b])
    r = mask_images(x, a, 0.5, keep="random", key=jax.random.key(0))
    assert ((r != 0).all(-1).reshape(3, -1).sum(1) == 10).all()
    with pytest.raises(ValueError, match=r"fractions must lie in \[0, 1\]"):
        mask_images(x, a, 1.5)
    with pytest.raises(ValueError, match="keep must be one of"):
        mask_images(x, a, 0.5, keep="middle")
    with pytest.raises(ValueError, match="same shape|one shape"):
        mask_images(x, a[..., :1], 0.5)


def test_diff_roar_random_is_near_zero_and_informative_is_positive():
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    retrain = make_retrainer(
        lambda: MLP(hidden=(128,)), epochs=15, batch_size=64, learning_rate=3e-3
    )
    key = jax.random.key(0)
    fractions = (0.2, 0.5)
    rng = np.random.default_rng(1)
    rand = roar(
        train,
        test,
        rng.uniform(size=train["image"].shape),
        rng.uniform(size=test["image"].shape),
        retrain=retrain,
        key=key,
        fractions=fractions,
        progress=False,
    )
    # The image itself ranks the ink first: an informative (if naive) attribution.
    ink = roar(
        train,
        test,
        train["image"],
        test["image"],
        retrain=retrain,
        key=key,
        fractions=fractions,
        progress=False,
    )
    # A random ranking makes top-k and bottom-k masks exchangeable: DiffROAR is 0 up to the
    # sampling error of two accuracies on n = 360 test digits (about 3.5 points at k = 0.2).
    # The 2-point criterion needs the larger MNIST test split and several seeds.
    n = len(test["label"])
    p, q = rand["top_k_accuracy"], rand["bottom_k_accuracy"]
    se = np.sqrt(p * (1 - p) / n + q * (1 - q) / n)
    assert np.all(np.abs(rand["diff_roar"]) <= 3 * se), (rand, se)
    assert np.all(ink["diff_roar"] > 0.2), ink
    removed = roar(
        train,
        test,
        train["image"],
        test["image"],
        retrain=retrain,
        key=key,
        fractions=(0.5,),
        mode="roar",
        progress=False,
    )
    assert removed["accuracy"][0] < ink["top_k_accuracy"][1]
