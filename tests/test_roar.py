"""ROAR / DiffROAR: masks keep exactly the right pixels; a random attribution's DiffROAR is
about 0 and an informative one's is positive, with real retraining on digits."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgrad.data import load_dataset
from jaxgrad.drivers import make_retrainer, roar
from jaxgrad.evaluation import mask_images
from jaxgrad.models import MLP


def keep(x, a, k, which, aggregate="abs_sum"):
    """DiffROAR's masks by brute force: the round(k P) most (least) salient pixels, ties in
    pixel order (a stable sort), the rest set to 0."""
    sal = {"abs_sum": np.abs(a).sum(-1), "sum": a.sum(-1)}[aggregate].reshape(len(a), -1)
    ranked = np.argsort(-sal if which == "top" else sal, axis=1, kind="stable")
    count = int(np.rint(k * sal.shape[1]))
    out = np.zeros_like(x).reshape(len(x), -1, x.shape[-1])
    for b in range(len(x)):
        idx = ranked[b, :count]
        out[b, idx] = x.reshape(len(x), -1, x.shape[-1])[b, idx]
    return out.reshape(x.shape)


def test_mask_images_removes_exactly_the_most_or_least_salient_pixels():
    rng = np.random.default_rng(0)
    x = rng.uniform(0.1, 1.0, size=(3, 4, 5, 2)).astype(np.float32)
    a = rng.normal(size=x.shape).astype(np.float32)
    sal = np.abs(a).sum(-1).reshape(3, -1)
    least = (np.asarray(mask_images(x, a, 0.25, order="least")) == 0).all(-1).reshape(3, -1)
    for b in range(3):
        assert set(np.flatnonzero(least[b])) == set(np.argsort(sal[b], kind="stable")[:5])
    removed = (np.asarray(mask_images(x, a, 0.25, order="most")) == 0).all(-1).reshape(3, -1)
    most = np.argsort(-sal, axis=1, kind="stable")[:, :5]
    for b in range(3):
        assert set(np.flatnonzero(removed[b])) == set(most[b])
    r = mask_images(x, a, 0.5, order="random", key=jax.random.key(0))
    assert ((np.asarray(r) != 0).all(-1).reshape(3, -1).sum(1) == 10).all()
    with pytest.raises(ValueError, match=r"fraction must lie in \[0, 1\]"):
        mask_images(x, a, 1.5)
    with pytest.raises(ValueError, match="order must be one of"):
        mask_images(x, a, 0.5, order="middle")
    with pytest.raises(ValueError, match="attribution must have x's shape"):
        mask_images(x, a[..., :1], 0.5)


def test_diff_roar_random_is_near_zero_and_informative_is_positive():
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    retrain = make_retrainer(
        lambda: MLP(hidden=(128,)), epochs=15, batch_size=64, learning_rate=3e-3
    )
    key = jax.random.key(0)
    fractions = (0.2, 0.5)
    rng = np.random.default_rng(1)
    curve = functools.partial(roar, train, test, retrain=retrain, key=key, progress=False)
    rand = curve(
        rng.uniform(size=train["image"].shape),
        rng.uniform(size=test["image"].shape),
        fractions=fractions,
    )
    # The image itself ranks the ink first: an informative (if naive) attribution.
    ink = curve(train["image"], test["image"], fractions=fractions)
    # A random ranking makes top-k and bottom-k masks exchangeable: DiffROAR is 0 up to the
    # sampling error of two accuracies on n = 360 test digits (about 3.5 points at k = 0.2).
    # The 2-point criterion needs the larger MNIST test split and several seeds.
    n = len(test["label"])
    p, q = rand["top_k_accuracy"], rand["bottom_k_accuracy"]
    se = np.sqrt(p * (1 - p) / n + q * (1 - q) / n)
    assert np.all(np.abs(rand["diff_roar"]) <= 3 * se), (rand, se)
    assert np.all(ink["diff_roar"] > 0.2), ink
    removed = curve(train["image"], test["image"], fractions=(0.5,), protocol="roar")
    assert removed["accuracy"][0] < ink["top_k_accuracy"][1]


def test_roar_seeds_fold_the_key_and_summarise_the_pairs():
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(6, 4, 4, 1)).astype(np.float32)
    data = {"image": x, "label": np.arange(6) % 2}
    key = jax.random.key(3)
    seen = []

    def retrain(train, test, k):
        # A stand-in with a known answer: the kept ink of the test split plus a seed offset.
        seen.append(k)
        offset = float(jax.random.uniform(k))
        return float(np.mean(test["image"])) + offset

    out = roar(
        data, data, x, x, retrain=retrain, key=key, fractions=(0.25, 0.5), seeds=3, progress=False
    )
    offsets = np.array([float(jax.random.uniform(jax.random.fold_in(key, s))) for s in range(3)])
    assert [jax.random.key_data(k).tolist() for k in seen[:3]] == [
        jax.random.key_data(jax.random.fold_in(key, s)).tolist() for s in range(3)
    ]
    ink = {
        which: np.array([keep(x, x, k, which).mean() for k in (0.25, 0.5)])
        for which in ("top", "bottom")
    }
    top = ink["top"][None] + offsets[:, None]
    bottom = ink["bottom"][None] + offsets[:, None]
    np.testing.assert_allclose(out["top_k_accuracy_per_seed"], top, rtol=1e-6)
    np.testing.assert_allclose(out["bottom_k_accuracy_per_seed"], bottom, rtol=1e-6)
    np.testing.assert_allclose(out["diff_roar"], ink["top"] - ink["bottom"], rtol=1e-5)
    pairs = top[:, None] - bottom[None]
    np.testing.assert_allclose(out["diff_roar_pair_std"], pairs.reshape(9, 2).std(0), rtol=1e-5)
    se = np.sqrt(top.var(0, ddof=1) / 3 + bottom.var(0, ddof=1) / 3)
    np.testing.assert_allclose(out["diff_roar_se"], se, rtol=1e-5)
    assert out["diff_roar_pair_std"].min() > 0  # the seeds' offsets differ between pairs
    one = roar(data, data, x, x, retrain=retrain, key=key, fractions=(0.5,), progress=False)
    assert np.isnan(one["diff_roar_se"]).all()
    removed = roar(
        data,
        data,
        x,
        x,
        retrain=retrain,
        key=key,
        fractions=(0.5,),
        protocol="roar",
        seeds=2,
        progress=False,
    )
    assert removed["accuracy_per_seed"].shape == (2, 1)
    # Attributions drawn per seed: seed 1 ranks the pixels in reverse, so its top-k kept are
    # seed 0's bottom-k kept.
    flip = roar(
        data,
        data,
        lambda s: x if s == 0 else -x,
        lambda s: x if s == 0 else -x,
        retrain=retrain,
        key=key,
        fractions=(0.25, 0.5),
        seeds=2,
        aggregate="sum",
        progress=False,
    )
    ink = {
        which: np.array([keep(x, x, k, which, aggregate="sum").mean() for k in (0.25, 0.5)])
        for which in ("top", "bottom")
    }
    np.testing.assert_allclose(
        flip["top_k_accuracy_per_seed"][0], ink["top"] + offsets[0], rtol=1e-6
    )
    np.testing.assert_allclose(
        flip["top_k_accuracy_per_seed"][1], ink["bottom"] + offsets[1], rtol=1e-6
    )
    np.testing.assert_allclose(
        flip["bottom_k_accuracy_per_seed"][1], ink["top"] + offsets[1], rtol=1e-6
    )
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="seeds"):
            roar(data, data, x, x, retrain=retrain, key=key, seeds=bad, progress=False)


def test_masks_with_tied_attributions_keep_the_first_pixels_in_order():
    """Tied salience (a constant map with one salient pixel): the top-k kept are the salient
    pixel and then the first pixels in pixel order, the bottom-k the first pixels in order."""
    x = np.random.default_rng(0).uniform(0.1, 1.0, size=(2, 4, 4, 1)).astype(np.float32)
    a = np.zeros_like(x)
    a[:, 3, 3] = 1.0
    data = {"image": x, "label": np.zeros(2, np.int32)}
    seen = []

    def retrain(train, test, key):
        seen.append(np.asarray(train["image"]))
        return 0.0

    roar(
        data, data, a, a, retrain=retrain, key=jax.random.key(0), fractions=(0.25,), progress=False
    )
    top, bottom = seen
    np.testing.assert_array_equal(top, keep(x, a, 0.25, "top"))
    np.testing.assert_array_equal(bottom, keep(x, a, 0.25, "bottom"))
    kept = (top != 0).reshape(2, -1)
    assert kept[:, [0, 1, 2, 15]].all() and kept.sum() == 8
    roar(
        data,
        data,
        a,
        a,
        retrain=retrain,
        key=jax.random.key(0),
        fractions=(0.25,),
        protocol="roar",
        progress=False,
    )
    removed_top = seen[-1]
    assert (removed_top[:, 3, 3] == 0).all() and (
        (removed_top != 0).sum(axis=(1, 2, 3)) == 12
    ).all()


def test_coordinate_masks_rank_each_channel_on_its_own():
    from jaxgrad.drivers import keep_ranked

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.random((2, 4, 4, 3), np.float32) + 1.0)  # no value equals the fill
    a = jnp.asarray(rng.normal(size=(2, 4, 4, 3)).astype(np.float32))
    count = int(np.rint(0.25 * 4 * 4 * 3))  # 12 of 48 coordinates
    kept = np.asarray(
        keep_ranked(x, a, jnp.float32(0.0), count=count, order="most", unit="coordinate")
    )
    for b in range(2):
        mask = kept[b] != 0
        assert mask.sum() == count
        # Exactly the coordinates of largest |a|, whatever their pixel's other channels.
        top = np.argsort(-np.abs(np.asarray(a[b])).ravel(), kind="stable")[:count]
        assert set(np.flatnonzero(mask.ravel())) == set(top)
    per_pixel = np.asarray(keep_ranked(x, a, jnp.float32(0.0), count=4, order="most"))
    # Pixel masks keep or drop a pixel's channels together; coordinate masks need not.
    assert np.all((per_pixel != 0).all(-1) == (per_pixel != 0).any(-1))
    assert not np.all((kept != 0).all(-1) == (kept != 0).any(-1))


def test_a_recorded_roar_curve_resumes_without_retraining_what_it_finished(tmp_path):
    rng = np.random.default_rng(1)
    data = {"image": rng.random((8, 4, 4, 1), np.float32), "label": np.arange(8) % 2}
    attribution = rng.random((8, 4, 4, 1))
    calls = []

    def retrain(train, test, key):
        calls.append(1)
        return float(np.mean(train["image"]))  # a deterministic stand-in for accuracy

    kw = dict(retrain=retrain, key=jax.random.key(0), fractions=(0.25, 0.5), seeds=2)
    record = tmp_path / "roar" / "curve.json"
    first = roar(data, data, attribution, attribution, record=record, progress=False, **kw)
    assert len(calls) == 8 and record.is_file()
    again = roar(data, data, attribution, attribution, record=record, progress=False, **kw)
    assert len(calls) == 8  # nothing retrained
    np.testing.assert_array_equal(first["diff_roar"], again["diff_roar"])
    # Other attributions (a model trained further): the record is stale, all is retrained.
    other = attribution[::-1].copy()
    roar(data, data, other, other, record=record, progress=False, **kw)
    assert len(calls) == 16


@pytest.mark.parametrize("unit", ["pixel", "coordinate"])
def test_road_imputation_keeps_the_kept_pixels_and_imputes_the_rest(unit):
    """imputation="road": the kept pixels are the constant-fill masks' kept pixels, the
    removed ones are ROAD's imputation from them (a linear image off the border is imputed
    exactly, so no outline of the mask remains), with noise only where imputed."""
    from jaxgrad.drivers import keep_ranked
    from jaxgrad.evaluation import noisy_linear_imputation

    rows, cols = np.meshgrid(np.arange(6), np.arange(6), indexing="ij")
    ramp = (0.1 * rows + 0.05 * cols + 0.3).astype(np.float32)
    x = np.repeat(ramp[None, ..., None], 2, 0).repeat(2, -1)  # [2, 6, 6, 2]
    a = np.zeros_like(x)
    a[:, 1:5, 1:5] = 1 + np.random.default_rng(0).random((2, 4, 4, 2))  # inner pixels salient
    count = 20 * (2 if unit == "coordinate" else 1)  # the 20 border pixels
    opts = dict(count=count, order="least", unit=unit)  # keep the border, remove the inside
    const = np.asarray(keep_ranked(x, a, jnp.float32(-1.0), **opts))
    removed = const == -1.0
    assert removed.sum() == 2 * 16 * 2  # every inner coordinate
    clean = np.asarray(keep_ranked(x, a, jnp.float32(-1.0), imputation="road", **opts))
    np.testing.assert_allclose(clean, x, atol=1e-5)  # the ramp, exactly: no outline
    key = jax.random.key(3)
    noisy = np.asarray(keep_ranked(x, a, jnp.float32(-1.0), key, 0.1, imputation="road", **opts))
    np.testing.assert_array_equal(noisy[~removed], x[~removed])
    assert np.abs(noisy[removed] - x[removed]).std() > 0.05
    # The same as the evaluation package's imputation of those coordinates.
    ref = noisy_linear_imputation(
        jnp.asarray(x), jnp.asarray(removed), key=jax.random.fold_in(key, 0x524F4144), noise=0.1
    )
    np.testing.assert_allclose(noisy, ref, atol=1e-6)


def test_roar_with_road_imputation_retrains_on_imputed_splits(tmp_path):
    rng = np.random.default_rng(2)
    data = {"image": rng.random((6, 5, 5, 1), np.float32) + 1.0, "label": np.arange(6) % 2}
    attribution = rng.random((6, 5, 5, 1))
    seen = []

    def retrain(train, test, key):
        seen.append(np.asarray(train["image"]))
        return float(np.mean(train["image"]))

    kw = dict(retrain=retrain, key=jax.random.key(0), fractions=(0.4,), progress=False)
    record = tmp_path / "curve.json"
    roar(data, data, attribution, attribution, fill_value=0.0, record=record, **kw)
    masked_const = seen[0]
    assert (masked_const == 0).any()
    roar(data, data, attribution, attribution, imputation="road", record=record, **kw)
    assert len(seen) == 4  # a road curve is not the constant curve's record
    imputed = seen[2]
    kept = masked_const != 0
    np.testing.assert_array_equal(imputed[kept], masked_const[kept])
    assert (imputed[~kept] > 0.5).all()  # imputed from neighbours near 1-2, not filled with 0
    with pytest.raises(ValueError, match="key must be a PRNG key"):
        roar(data, data, attribution, attribution, retrain=retrain, key=None, progress=False)
    nan_attribution = attribution.copy()
    nan_attribution[2, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="attributions contain NaN .* first at index 2"):
        roar(data, data, nan_attribution, attribution, **kw)
    with pytest.raises(ValueError, match="imputation must be one of"):
        roar(data, data, attribution, attribution, imputation="zero", **kw)
    with pytest.raises(ValueError, match="imputation_noise must be"):
        roar(data, data, attribution, attribution, imputation="road", imputation_noise=-1, **kw)


def _digits_subset(n_train=256, n_test=96):
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    return (
        {k: v[:n_train] for k, v in train.items()},
        {k: v[:n_test] for k, v in test.items()},
    )


def test_models_trained_together_equal_models_trained_one_by_one():
    import optax

    from jaxgrad.training import classifier_loss, train_for_epochs, train_seeds_for_epochs

    train, _ = _digits_subset()
    model = MLP(hidden=(32,))
    tx = optax.adam(3e-3)
    keys = jax.random.split(jax.random.key(4), 3)
    kw = dict(epochs=2, batch_size=48)  # 256 examples: a padded last batch every epoch
    together = train_seeds_for_epochs(model, classifier_loss(model), tx, train, keys=keys, **kw)
    for s in range(3):
        alone = train_for_epochs(model, classifier_loss(model), tx, train, key=keys[s], **kw)
        assert int(together.step[s]) == int(alone.step) == 12
        jax.tree.map(
            lambda a, b, s=s: np.testing.assert_allclose(a[s], b, rtol=1e-5, atol=1e-6),
            together.params,
            alone.params,
        )


def test_a_diverging_model_trained_together_is_named():
    import optax

    from jaxgrad.training import Diverged, classifier_loss, train_seeds_for_epochs

    train, _ = _digits_subset(64)
    model = MLP(hidden=(8,))
    keys = jax.random.split(jax.random.key(0), 2)
    with pytest.raises(Diverged, match="model"):
        train_seeds_for_epochs(
            model, classifier_loss(model), optax.sgd(1e30), train, keys=keys, epochs=3,
            batch_size=32,
        )  # fmt: skip
    with pytest.raises(ValueError, match="keys must be a 1-D array of PRNG keys"):
        train_seeds_for_epochs(
            model, classifier_loss(model), optax.sgd(0.1), train, keys=jax.random.key(0),
            epochs=1, batch_size=32,
        )  # fmt: skip


@pytest.mark.slow  # real retrainings; test_models_trained_together_... covers the training
def test_roar_retrains_a_masks_seeds_together_with_the_same_accuracies():
    train, test = _digits_subset()
    retrain = make_retrainer(lambda: MLP(hidden=(32,)), epochs=3, batch_size=64)
    one_by_one = lambda tr, te, k: retrain(tr, te, k)  # noqa: E731 (no .together)
    rng = np.random.default_rng(0)
    a_train, a_test = rng.random(train["image"].shape), rng.random(test["image"].shape)
    kw = dict(key=jax.random.key(1), fractions=(0.3,), seeds=3, progress=False)
    together = roar(train, test, a_train, a_test, retrain=retrain, **kw)
    alone = roar(train, test, a_train, a_test, retrain=one_by_one, **kw)
    for name in ("top_k_accuracy_per_seed", "bottom_k_accuracy_per_seed"):
        np.testing.assert_allclose(together[name], alone[name], atol=1.5 / len(test["label"]))
    keys = jax.random.split(jax.random.key(2), 2)
    accuracies = retrain.together(train, test, keys)
    assert accuracies.shape == (2,)
    np.testing.assert_allclose(accuracies, [retrain(train, test, k) for k in keys], atol=1.5 / 96)
