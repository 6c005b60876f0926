"""Pixel perturbation: exact pixel counts, the right pixels, fills, controls and bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgrad.evaluation import area_under_curve, pixel_perturbation, pixel_salience, removal_ranks


def counter(fill):
    """Logit 0 counts the pixels equal to ``fill``; logit 1 is the sum of the image."""

    def logit_fn(params, x):
        del params
        hits = jnp.sum(jnp.all(x == fill, axis=-1), axis=(1, 2)).astype(x.dtype)
        return jnp.stack([hits, jnp.sum(x, axis=(1, 2, 3))], axis=1)

    return logit_fn


def test_exact_counts_and_least_salient_pixels_go_first():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(0.1, 1.0, size=(3, 5, 4, 2)), jnp.float32)
    attr = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
    fractions = [0.0, 0.1, 0.25, 0.5, 1.0]
    out = pixel_perturbation(
        counter(-1.0), None, x, jnp.zeros(3, jnp.int32), attr, fractions=fractions, fill_value=-1.0
    )
    np.testing.assert_array_equal(out["removed"], [0, 2, 5, 10, 20])
    np.testing.assert_array_equal(out["logit"], np.broadcast_to(out["removed"][:, None], (5, 3)))
    # The pixels removed at 25% are the 5 with the smallest sum |a| over channels.
    out = pixel_perturbation(
        counter(-1.0), None, x, jnp.ones(3, jnp.int32), attr, fractions=[0.25], fill_value=0.0
    )
    s = np.abs(np.asarray(attr)).sum(-1).reshape(3, -1)
    for b in range(3):
        keep = np.ones(20, bool)
        keep[np.argsort(s[b], kind="stable")[:5]] = False
        want = np.asarray(x[b]).reshape(20, 2)[keep].sum()
        assert float(out["logit"][0, b]) == pytest.approx(want, rel=1e-5)


def test_most_salient_and_random_orders_and_fills():
    sal = jnp.asarray([[[3.0, 1.0], [2.0, 0.0]]])
    np.testing.assert_array_equal(removal_ranks(sal, "least"), [[[3, 1], [2, 0]]])
    np.testing.assert_array_equal(removal_ranks(sal, "most"), [[[0, 2], [1, 3]]])
    r1 = removal_ranks(jnp.zeros((2, 6, 6)), "random", jax.random.key(0))
    r2 = removal_ranks(jnp.zeros((2, 6, 6)), "random", jax.random.key(0))
    np.testing.assert_array_equal(r1, r2)
    assert sorted(np.asarray(r1[0]).ravel().tolist()) == list(range(36))
    assert not np.array_equal(r1[0], r1[1])
    a = jnp.asarray([[[[1.0, -1.0, 1.0]]]])
    assert float(pixel_salience(a, "std")[0, 0, 0]) == pytest.approx(np.std([1, -1, 1]))
    x = jnp.arange(16.0).reshape(1, 4, 4, 1) / 16
    t = jnp.zeros(1, jnp.int32)
    lf = lambda p, z: jnp.stack([jnp.sum(z, axis=(1, 2, 3))] * 2, axis=1)  # noqa: E731
    full = dict(fractions=[1.0], order="least")
    got = pixel_perturbation(lf, None, x, t, x, fill="image_mean", **full)["logit"]
    np.testing.assert_allclose(got, [[float(x.sum())]], rtol=1e-6)
    got = pixel_perturbation(lf, None, x, t, x, fill="data_mean", data_mean=0.25, **full)["logit"]
    np.testing.assert_allclose(got, [[4.0]], rtol=1e-6)
    got = pixel_perturbation(lf, None, x, t, x, fill="blur", blur_sigma=1.0, **full)["logit"]
    assert 0 < float(got[0, 0]) < float(x.sum())  # zero padding loses mass at the borders


def test_accuracy_probability_change_and_auc():
    w = jnp.asarray(np.random.default_rng(1).normal(size=(16, 3)), jnp.float32)
    lf = lambda p, z: z.reshape(len(z), -1) @ p  # noqa: E731
    x = jnp.asarray(np.random.default_rng(2).uniform(size=(8, 4, 4, 1)), jnp.float32)
    t = jnp.argmax(lf(w, x), axis=1)
    grad_x_input = x * w[:, t].T.reshape(8, 4, 4, 1)  # exact contributions of a linear model
    kw = dict(fractions=np.linspace(0, 1, 9), aggregate="sum")
    most = pixel_perturbation(lf, w, x, t, grad_x_input, order="most", **kw)
    least = pixel_perturbation(lf, w, x, t, grad_x_input, order="least", **kw)
    assert float(most["correct"][0].mean()) == 1.0
    # Removing the largest positive contributions first lowers the logit fastest.
    assert bool(jnp.all(most["logit"] <= least["logit"] + 1e-6))
    assert float(area_under_curve(kw["fractions"], most["logit"].mean(1))) < float(
        area_under_curve(kw["fractions"], least["logit"].mean(1))
    )
    np.testing.assert_allclose(most["fractional_change"][0], 0.0, atol=1e-6)
    assert bool(jnp.all((most["probability"] >= 0) & (most["probability"] <= 1)))
    np.testing.assert_allclose(area_under_curve([0.0, 0.5, 1.0], [1.0, 1.0, 0.0]), 0.75)
    chunked = pixel_perturbation(lf, w, x, t, grad_x_input, order="most", chunk_size=4, **kw)
    np.testing.assert_allclose(chunked["logit"], most["logit"], rtol=1e-6)


def test_bad_input_is_named():
    x = jnp.ones((2, 4, 4, 1))
    t = jnp.zeros(2, jnp.int32)
    lf = counter(0.0)
    with pytest.raises(ValueError, match="attribution must have x's shape"):
        pixel_perturbation(lf, None, x, t, jnp.ones((2, 4, 4, 3)))
    with pytest.raises(ValueError, match=r"fractions must lie in \[0, 1\]"):
        pixel_perturbation(lf, None, x, t, x, fractions=[0.1, 1.5])
    with pytest.raises(ValueError, match="order='random' needs key="):
        pixel_perturbation(lf, None, x, t, x, order="random")
    with pytest.raises(ValueError, match="aggregate must be one of"):
        pixel_perturbation(lf, None, x, t, x, aggregate="l2")
    with pytest.raises(ValueError, match="fill must be one of"):
        pixel_perturbation(lf, None, x, t, x, fill="noise")


def test_random_ties_permute_equal_pixels_and_keep_the_order_of_distinct_ones(key):
    from jaxgrad.evaluation import removal_ranks

    # Half the pixels tie at 0, the others are distinct.
    s = jnp.concatenate([jnp.zeros((2, 4, 8)), jnp.arange(1.0, 65.0).reshape(2, 4, 8)], axis=1)
    for order in ("least", "most"):
        stable = removal_ranks(s, order)
        r1 = removal_ranks(s, order, jax.random.key(1), ties="random")
        r2 = removal_ranks(s, order, jax.random.key(2), ties="random")
        for r in (r1, r2):  # a permutation of the positions, per image
            np.testing.assert_array_equal(
                np.sort(r.reshape(2, -1), 1), np.tile(np.arange(64), (2, 1))
            )
        # Distinct pixels keep their ranks; tied ones take the same set of ranks, reshuffled.
        np.testing.assert_array_equal(r1[:, 4:], stable[:, 4:])
        np.testing.assert_array_equal(
            np.sort(r1[:, :4].reshape(2, -1)), np.sort(stable[:, :4].reshape(2, -1))
        )
        assert not np.array_equal(r1[:, :4], stable[:, :4])
        assert not np.array_equal(r1[:, :4], r2[:, :4])
    with pytest.raises(ValueError, match="ties='random' needs key"):
        removal_ranks(s, "least", ties="random")
    with pytest.raises(ValueError, match="ties"):
        removal_ranks(s, "least", key, ties="shuffle")


def test_random_ties_in_pixel_perturbation_and_roar_masks_stay_within_the_tied_pixels(key):
    from jaxgrad.drivers import keep_ranked

    x = jax.random.uniform(key, (3, 6, 6, 1)) + 0.5
    a = jnp.where(jnp.arange(36).reshape(1, 6, 6, 1) % 2 == 0, 0.0, x)  # 0 on half the pixels
    odd = (jnp.arange(36).reshape(1, 6, 6, 1) % 2 != 0).astype(x.dtype)  # where a != 0
    lf = lambda p, xx: jnp.stack([jnp.sum(xx * odd, (1, 2, 3)), jnp.zeros(len(xx))], -1)  # noqa: E731
    r = pixel_perturbation(
        lf, None, x, jnp.zeros(3, jnp.int32), a, fractions=(0.25, 0.5), key=key, ties="random"
    )
    # Only pixels where the map is 0 are removed first, and the logit ignores them.
    np.testing.assert_allclose(r["fractional_change"], 0.0, atol=1e-6)
    kept = keep_ranked(x, a, jnp.float32(-1.0), key, count=18, order="most", ties="random")
    np.testing.assert_array_equal(kept == -1.0, jnp.broadcast_to(a == 0, x.shape))
    kept = keep_ranked(x, a, jnp.float32(-1.0), key, count=9, order="least", ties="random")
    assert np.all(np.sum(kept != -1.0, axis=(1, 2, 3)) == 9)
    assert np.all(np.where(kept != -1.0, a == 0, True))
