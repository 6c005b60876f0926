"""Infidelity, sensitivity, faithfulness correlation, deletion/insertion and ROAD.

Closed forms (a linear model's exact attributions, a quadratic's gradient, the imputation of
a constant and of a linear image), brute force (a dense solve of ROAD's linear system, a
loop over the same draws), invariants, and the same answer under jit and on a user's own
Linen, NNX and plain models. The equality with Captum and Quantus is in
``test_peers_captum.py``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import nnx

from jaxgrad import _random
from jaxgrad.attribution import gradient, gradient_x_input
from jaxgrad.evaluation import (
    deletion_insertion,
    faithfulness_correlation,
    infidelity,
    noisy_linear_imputation,
    road,
    sensitivity,
)
from jaxgrad.models import linen_logit_fn, nnx_logit_fn

H = W = 8


def linear_model(key, k=3, shape=(H, W, 1)):
    """``f(x) = W x + b`` on images: every attribution identity has a closed form."""
    kw, kb = jax.random.split(key)
    d = int(np.prod(shape))
    params = {"w": jax.random.normal(kw, (d, k)), "b": jax.random.normal(kb, (k,))}

    def logit_fn(p, x):
        return x.reshape(x.shape[0], -1) @ p["w"] + p["b"][None]

    return logit_fn, params


@pytest.fixture
def batch():
    x = jax.random.uniform(jax.random.key(1), (5, H, W, 1))
    return x, jnp.array([0, 1, 2, 0, 1])


# --- infidelity ---------------------------------------------------------------------------


def test_infidelity_of_a_linear_models_exact_attributions_is_zero(batch, x64):
    # float64: normalize's dd - ad^2 / aa cancels to rounding (1e-6 in float32).
    x, t = batch
    x = x.astype(jnp.float64)
    f, p = linear_model(jax.random.key(0))
    k = jax.random.key(2)
    grad = gradient(f, p, x, t)
    gxi = gradient_x_input(f, p, x, t)
    for normalize in (False, True):
        # Gaussian I: f(x) - f(x - I) = w_t . I exactly, the gradient's dot product.
        v = infidelity(f, p, x, t, grad, key=k, noise_scale=0.1, normalize=normalize)
        np.testing.assert_allclose(v, 0.0, atol=1e-12)
        # Square removal to baseline 0: f(x) - f(x~) = sum over the square of w_t x.
        v = infidelity(f, p, x, t, gxi, key=k, perturbation="square", normalize=normalize)
        np.testing.assert_allclose(v, 0.0, atol=1e-12)
    # A wrong attribution is penalised, and normalize removes a scale error only.
    assert (infidelity(f, p, x, t, 2 * grad, key=k, noise_scale=0.1) > 1e-4).all()
    v = infidelity(f, p, x, t, 2 * grad, key=k, noise_scale=0.1, normalize=True)
    np.testing.assert_allclose(v, 0.0, atol=1e-12)


def test_infidelity_equals_the_loop_over_its_documented_draws(batch):
    x, t = batch
    f, p = linear_model(jax.random.key(0))
    a = jax.random.normal(jax.random.key(5), x.shape)  # any attribution
    g = lambda z: jnp.tanh(f(p, z))  # noqa: E731 (a nonlinear output)
    logit_fn = lambda params, z: g(z)  # noqa: E731
    key, n, sigma = jax.random.key(7), 6, 0.05
    ours = infidelity(logit_fn, p, x, t, a, key=key, num_samples=n, noise_scale=sigma)
    f0 = np.asarray(g(x))[np.arange(5), t]
    errs = []
    for k in jax.random.split(key, n):
        pert = sigma * np.asarray(jax.random.normal(k, x.shape))
        fx = np.asarray(g(x - pert))[np.arange(5), t]
        errs.append((np.sum(np.asarray(a) * pert, axis=(1, 2, 3)) - (f0 - fx)) ** 2)
    np.testing.assert_allclose(ours, np.mean(errs, axis=0), rtol=1e-4, atol=1e-9)
    # normalize: the minimum over rescalings of the attribution, hence never larger.
    norm = infidelity(logit_fn, p, x, t, a, key=key, num_samples=n, noise_scale=sigma,
                      normalize=True)  # fmt: skip
    assert (np.asarray(norm) <= np.asarray(ours) + 1e-9).all()
    scaled = infidelity(logit_fn, p, x, t, 5 * a, key=key, num_samples=n, noise_scale=sigma,
                        normalize=True)  # fmt: skip
    np.testing.assert_allclose(scaled, norm, rtol=1e-4, atol=1e-12)


# --- sensitivity --------------------------------------------------------------------------


def test_sensitivity_of_a_constant_gradient_is_zero_and_of_a_quadratic_is_its_closed_form(
    batch,
):
    x, t = batch
    f, p = linear_model(jax.random.key(0))
    np.testing.assert_allclose(
        sensitivity(f, p, x, t, key=jax.random.key(3), method=gradient), 0.0, atol=1e-6
    )
    # logit_t = 0.5 x^T A_t x: the gradient A_t x moves by A_t u exactly.
    d = H * W
    m = jax.random.normal(jax.random.key(4), (3, d, d)) / np.sqrt(d)
    a_mats = m @ jnp.swapaxes(m, 1, 2)

    def quad(params, z):
        v = z.reshape(z.shape[0], -1)
        return 0.5 * jnp.einsum("bi,kij,bj->bk", v, params, v)

    key, n, r = jax.random.key(8), 7, 0.1
    for reduce in ("max", "mean"):
        ours = sensitivity(
            quad, a_mats, x, t, key=key, method=gradient, radius=r, num_samples=n, reduce=reduce
        )
        v = np.asarray(x).reshape(5, -1)
        am = np.asarray(a_mats)[np.asarray(t)]
        ax = np.einsum("bij,bj->bi", am, v)
        ratios = []
        for k in jax.random.split(key, n):
            u = np.asarray(jax.random.uniform(k, x.shape, minval=-r, maxval=r)).reshape(5, -1)
            ratios.append(np.linalg.norm(np.einsum("bij,bj->bi", am, u), axis=1))
        ratios = np.array(ratios) / np.linalg.norm(ax, axis=1)
        expected = ratios.max(0) if reduce == "max" else ratios.mean(0)
        np.testing.assert_allclose(ours, expected, rtol=1e-4)
    # The Lipschitz bound: ||A u|| <= ||A||_2 ||u||_2 <= ||A||_2 r sqrt(d).
    lip = np.linalg.norm(am, ord=2, axis=(1, 2))
    assert (np.asarray(ours) <= lip * r * np.sqrt(d) / np.linalg.norm(ax, axis=1)).all()


def test_sensitivity_takes_any_method_and_a_fixed_method_key(batch):
    from jaxgrad.attribution import smoothgrad

    x, t = batch
    f, p = linear_model(jax.random.key(0))
    # SmoothGrad of a linear model is its gradient whatever the noise: sensitivity 0, once
    # the same method key is used at x and at every copy.
    v = sensitivity(f, p, x, t, key=jax.random.key(1), method=smoothgrad,
                    method_key=jax.random.key(2), num_samples=4)  # fmt: skip
    np.testing.assert_allclose(v, 0.0, atol=1e-6)


# --- faithfulness correlation -------------------------------------------------------------


def test_faithfulness_correlation_is_one_for_a_linear_models_gradient_x_input(batch):
    x, t = batch
    f, p = linear_model(jax.random.key(0))
    a = gradient_x_input(f, p, x, t)
    kw = dict(key=jax.random.key(3), num_runs=20, subset_size=10, fill="constant")
    np.testing.assert_allclose(faithfulness_correlation(f, p, x, t, a, **kw), 1.0, atol=1e-5)
    np.testing.assert_allclose(faithfulness_correlation(f, p, x, t, -a, **kw), -1.0, atol=1e-5)


def test_faithfulness_correlation_equals_the_loop_over_given_subsets(batch):
    x, t = batch
    f, p = linear_model(jax.random.key(0))
    g = lambda z: jnp.tanh(f(p, z))  # noqa: E731
    logit_fn = lambda params, z: g(z)  # noqa: E731
    a = jax.random.normal(jax.random.key(5), x.shape)
    rng = np.random.default_rng(0)
    subsets = np.stack([[rng.choice(H * W, 12, replace=False) for _ in range(5)]
                        for _ in range(9)])  # fmt: skip
    ours = faithfulness_correlation(logit_fn, p, x, t, a, subsets=subsets)
    xn, an = np.asarray(x).reshape(5, -1), np.asarray(a).reshape(5, -1)
    f0 = np.asarray(g(x))[np.arange(5), t]
    sums, deltas = [], []
    for s in subsets:
        xp = xn.copy()
        for b in range(5):
            xp[b, s[b]] = xn[b].min()  # Quantus's "black"
        deltas.append(f0 - np.asarray(g(jnp.asarray(xp.reshape(x.shape))))[np.arange(5), t])
        sums.append(np.take_along_axis(an, s, axis=1).sum(1))
    expected = [np.corrcoef(np.array(sums)[:, b], np.array(deltas)[:, b])[0, 1] for b in range(5)]
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-5)


# --- deletion / insertion -----------------------------------------------------------------


def test_deletion_and_insertion_curves_of_a_linear_model(batch):
    x, t = batch
    f, p = linear_model(jax.random.key(0))
    a = gradient_x_input(f, p, x, t)
    out = deletion_insertion(f, p, x, t, a, mode="deletion", num_steps=4)
    # Deleting to 0 the k pixels of largest |w x|: the logit drops by their contributions.
    contrib = np.asarray(a).reshape(5, -1)
    order = np.argsort(-np.abs(contrib), axis=1, kind="stable")
    f0 = np.asarray(f(p, x))[np.arange(5), t]
    for i, c in enumerate(np.asarray(out["changed"])):
        drop = np.take_along_axis(contrib, order[:, :c], axis=1).sum(1)
        np.testing.assert_allclose(out["logit"][i], f0 - drop, rtol=1e-5, atol=1e-5)
    assert list(out["changed"]) == [0, 16, 32, 48, 64]
    probs = np.asarray(out["probability"])
    trapezoid = np.sum((probs[1:] + probs[:-1]) / 2 * 0.25, axis=0)
    np.testing.assert_allclose(out["auc"], trapezoid, rtol=1e-6)
    # Insertion runs from the substrate to the image.
    ins = deletion_insertion(f, p, x, t, a, mode="insertion", fill="constant", fill_value=0.5)
    np.testing.assert_allclose(ins["logit"][-1], f0, rtol=1e-5)
    np.testing.assert_allclose(
        ins["logit"][0], np.asarray(f(p, jnp.full_like(x, 0.5)))[np.arange(5), t], rtol=1e-5
    )
    assert ins["probability"].shape == (H + 1, 5)


# --- ROAD ---------------------------------------------------------------------------------


def dense_imputation(x, mask):
    """ROAD's linear system solved densely, one image and channel at a time (numpy)."""
    offsets = [((1, 1), 1 / 12), ((0, 1), 1 / 6), ((-1, 1), 1 / 12), ((1, -1), 1 / 12),
               ((0, -1), 1 / 6), ((-1, -1), 1 / 12), ((1, 0), 1 / 6), ((-1, 0), 1 / 6)]  # fmt: skip
    out = np.array(x, np.float64)
    b, h, w, c = x.shape
    for n in range(b):
        unknown = np.argwhere(mask[n])
        index = {tuple(ij): k for k, ij in enumerate(unknown)}
        a = np.zeros((len(unknown), len(unknown)))
        rhs = np.zeros((len(unknown), c))
        for k, (i, j) in enumerate(unknown):
            for (di, dj), wgt in offsets:
                ii, jj = i + di, j + dj
                if not (0 <= ii < h and 0 <= jj < w):
                    continue
                a[k, k] += wgt
                if mask[n, ii, jj]:
                    a[k, index[(ii, jj)]] -= wgt
                else:
                    rhs[k] += wgt * x[n, ii, jj]
        if len(unknown):
            out[n, unknown[:, 0], unknown[:, 1]] = np.linalg.solve(a, rhs)
    return out


def test_imputation_solves_roads_linear_system(x64):
    x = np.asarray(jax.random.uniform(jax.random.key(0), (3, 9, 7, 2), jnp.float64))
    mask = np.asarray(jax.random.uniform(jax.random.key(1), (3, 9, 7))) < np.array(
        [0.2, 0.6, 0.95]
    ).reshape(3, 1, 1)
    ours = noisy_linear_imputation(jnp.asarray(x), jnp.asarray(mask), noise=0.0, tol=1e-12)
    np.testing.assert_allclose(ours, dense_imputation(x, mask), rtol=1e-8, atol=1e-9)
    # float32 to the default tolerance.
    ours32 = noisy_linear_imputation(jnp.asarray(x, jnp.float32), jnp.asarray(mask), noise=0.0)
    np.testing.assert_allclose(ours32, dense_imputation(x, mask), atol=2e-4)


def test_imputation_of_a_constant_and_of_a_linear_image():
    rows, cols = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
    mask = np.asarray(jax.random.uniform(jax.random.key(2), (2, H, W))) < 0.5
    const = np.full((2, H, W, 1), 0.3, np.float32)
    out = noisy_linear_imputation(const, jnp.asarray(mask), noise=0.0)
    np.testing.assert_allclose(out, const, atol=1e-5)
    # A linear image is its own 8-neighbour mean wherever all 8 neighbours exist, so removing
    # pixels off the border imputes it exactly.
    ramp = (0.1 * rows - 0.05 * cols + 0.2)[None, ..., None].repeat(2, 0).astype(np.float32)
    inner = mask.copy()
    inner[:, [0, -1], :] = False
    inner[:, :, [0, -1]] = False
    out = noisy_linear_imputation(ramp, jnp.asarray(inner), noise=0.0)
    np.testing.assert_allclose(out, ramp, atol=1e-5)
    # The noise: N(0, noise^2) on the imputed pixels only, from the key.
    key = jax.random.key(9)
    noisy = noisy_linear_imputation(const, jnp.asarray(mask), key=key, noise=0.5)
    diff = np.asarray(noisy - const)
    np.testing.assert_array_equal(diff[~mask], 0.0)
    eps = 0.5 * np.asarray(_random.normal(key, const.shape))
    np.testing.assert_allclose(diff[mask], eps[mask], atol=1e-5)


def test_road_curve_matches_explicit_imputations(batch):
    x, t = batch
    f, p = linear_model(jax.random.key(0))
    a = gradient_x_input(f, p, x, t)
    key = jax.random.key(4)
    out = road(f, p, x, t, a, key=key, fractions=(0.0, 0.25, 0.5), order="most")
    assert list(out["removed"]) == [0, 16, 32]
    np.testing.assert_allclose(out["logit"][0], np.asarray(f(p, x))[np.arange(5), t], rtol=1e-5)
    # Fraction 0.5 by hand: the 32 pixels of largest |a|, imputed with that fraction's key.
    _, k_noise = jax.random.split(key)
    k = jax.random.split(k_noise, 3)[2]
    sal = np.abs(np.asarray(a)).reshape(5, -1)
    mask = np.zeros_like(sal, bool)
    np.put_along_axis(mask, np.argsort(-sal, axis=1, kind="stable")[:, :32], True, axis=1)
    xp = noisy_linear_imputation(x, jnp.asarray(mask.reshape(5, H, W)), key=k, noise=0.01)
    np.testing.assert_allclose(
        out["logit"][2], np.asarray(f(p, xp))[np.arange(5), t], rtol=1e-4, atol=1e-4
    )
    # noise=0 needs no key; LeRF imputes the pixels MoRF keeps.
    lerf = road(f, p, x, t, a, key=None, noise=0.0, order="least", fractions=(0.5,))
    mask = np.zeros_like(sal, bool)
    np.put_along_axis(mask, np.argsort(sal, axis=1, kind="stable")[:, :32], True, axis=1)
    xp = noisy_linear_imputation(x, jnp.asarray(mask.reshape(5, H, W)), noise=0.0)
    np.testing.assert_allclose(
        lerf["logit"][0], np.asarray(f(p, xp))[np.arange(5), t], rtol=1e-4, atol=1e-4
    )


# --- jit and users' models ----------------------------------------------------------------


class LinenCNN(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(4, (3, 3))(x))
        x = nn.max_pool(x, (2, 2), (2, 2))
        return nn.Dense(3)(x.reshape(x.shape[0], -1))


class NNXMLP(nnx.Module):
    def __init__(self, rngs):
        self.l1 = nnx.Linear(H * W, 16, rngs=rngs)
        self.l2 = nnx.Linear(16, 3, rngs=rngs)

    def __call__(self, x):
        return self.l2(nnx.relu(self.l1(x.reshape(x.shape[0], -1))))


def user_models():
    x0 = jnp.zeros((1, H, W, 1))
    linen = LinenCNN()
    yield linen_logit_fn(linen), linen.init(jax.random.key(0), x0)
    yield nnx_logit_fn(NNXMLP(nnx.Rngs(0)))
    yield linear_model(jax.random.key(0))


@pytest.mark.parametrize("which", [0, 1, 2], ids=["linen", "nnx", "plain"])
def test_every_metric_runs_under_jit_on_users_models(batch, which):
    x, t = batch
    f, p = list(user_models())[which]
    a = gradient(f, p, x, t)
    k = jax.random.key(0)
    calls = {
        "infidelity": lambda p, x, t, a, k: infidelity(f, p, x, t, a, key=k, chunk_size=4),
        "faithfulness": lambda p, x, t, a, k: faithfulness_correlation(
            f, p, x, t, a, key=k, num_runs=8, subset_size=6
        ),
        "sensitivity": lambda p, x, t, a, k: sensitivity(
            f, p, x, t, key=k, method=gradient, num_samples=3
        ),
        "deletion": lambda p, x, t, a, k: deletion_insertion(f, p, x, t, a)["auc"],
        "road": lambda p, x, t, a, k: road(f, p, x, t, a, key=k, fractions=(0.3, 0.6))["logit"],
    }
    for name, call in calls.items():
        eager = call(p, x, t, a, k)
        jitted = jax.jit(call)(p, x, t, a, k)
        np.testing.assert_allclose(jitted, eager, rtol=2e-4, atol=1e-5, err_msg=name)
        assert np.isfinite(np.asarray(eager)).all(), name


# --- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda f, p, x, t, a: infidelity(f, p, x, t, a[:, :4], key=jax.random.key(0)),
         "attribution must have x's shape"),
        (lambda f, p, x, t, a: infidelity(f, p, x, t, a, key=jax.random.key(0),
                                          perturbation="box"), "perturbation must be one of"),
        (lambda f, p, x, t, a: infidelity(f, p, x, t, a, key=jax.random.key(0),
                                          noise_scale=-1.0), "noise_scale must be"),
        (lambda f, p, x, t, a: infidelity(f, p, x, t, a, key=jax.random.key(0),
                                          perturbation="square", patch_size=20), "patch_size"),
        (lambda f, p, x, t, a: infidelity(f, p, x, t, a, key=jax.random.key(0), output="p"),
         "output must be one of"),
        (lambda f, p, x, t, a: faithfulness_correlation(f, p, x, t, a),
         "needs key="),
        (lambda f, p, x, t, a: faithfulness_correlation(f, p, x, t, a, key=jax.random.key(0),
                                                        subset_size=65), "subset_size"),
        (lambda f, p, x, t, a: faithfulness_correlation(f, p, x, t, a,
                                                        subsets=np.zeros((3, 2, 4), int)),
         "subsets must have shape"),
        (lambda f, p, x, t, a: sensitivity(f, p, x, t, key=jax.random.key(0), method=gradient, radius=np.nan),
         "radius must be"),
        (lambda f, p, x, t, a: sensitivity(f, p, x, t, key=jax.random.key(0), method=gradient, reduce="min"),
         "reduce must be one of"),
        (lambda f, p, x, t, a: sensitivity(f, p, x, t, key=jax.random.key(0), method=gradient, num_samples=0),
         "num_samples must be"),
        (lambda f, p, x, t, a: deletion_insertion(f, p, x, t, a, mode="both"),
         "mode must be one of"),
        (lambda f, p, x, t, a: deletion_insertion(f, p, x, t, a, num_steps=100),
         "num_steps must be at most"),
        (lambda f, p, x, t, a: road(f, p, x, t, a, key=None), "needs key="),
        (lambda f, p, x, t, a: road(f, p, x, t, a, key=None, noise=0.0, fractions=(1.5,)),
         "fractions must lie in"),
        (lambda f, p, x, t, a: road(f, p, x, t, a.at[0, 0, 0, 0].set(jnp.nan), key=None,
                                    noise=0.0), "attribution contains NaN"),
        (lambda f, p, x, t, a: road(f, p, x, t, a, key=None, noise=-0.1), "noise must be"),
        (lambda f, p, x, t, a: noisy_linear_imputation(x, np.zeros((5, H, W))),
         "mask must be a bool array"),
        (lambda f, p, x, t, a: infidelity(f, p, x, jnp.array([0, 1]), a, key=jax.random.key(0)),
         "target must have shape"),
    ],
)  # fmt: skip
def test_bad_input_gets_a_named_error(batch, call, match):
    x, t = batch
    f, p = linear_model(jax.random.key(0))
    a = gradient(f, p, x, t)
    with pytest.raises((ValueError, TypeError), match=match):
        call(f, p, x, t, a)


def test_chunked_and_unchunked_metrics_agree(batch):
    x, t = batch
    f, p = linear_model(jax.random.key(0))
    g = lambda params, z: jnp.tanh(f(params, z))  # noqa: E731 (nonlinear)
    a = gradient(g, p, x, t)
    k = jax.random.key(1)
    for cs in (3,):  # 3 does not divide the copies: the last chunk is padded
        pairs = [
            (infidelity(g, p, x, t, a, key=k, num_samples=7),
             infidelity(g, p, x, t, a, key=k, num_samples=7, chunk_size=cs)),
            (sensitivity(g, p, x, t, key=k, method=gradient, num_samples=5),
             sensitivity(g, p, x, t, key=k, method=gradient, num_samples=5, chunk_size=cs)),
            (faithfulness_correlation(g, p, x, t, a, key=k, num_runs=7, subset_size=9),
             faithfulness_correlation(g, p, x, t, a, key=k, num_runs=7, subset_size=9,
                                      chunk_size=cs)),
            (deletion_insertion(g, p, x, t, a, num_steps=4)["auc"],
             deletion_insertion(g, p, x, t, a, num_steps=4, chunk_size=cs)["auc"]),
            (road(g, p, x, t, a, key=k, fractions=(0.2, 0.4, 0.6, 0.8))["logit"],
             road(g, p, x, t, a, key=k, fractions=(0.2, 0.4, 0.6, 0.8), chunk_size=cs)["logit"]),
        ]  # fmt: skip
        for whole, chunked in pairs:
            np.testing.assert_allclose(chunked, whole, rtol=1e-5, atol=1e-6)


def test_merged_batches_keep_a_sharded_batch_sharded():
    # The copies merge example-major, so a batch sharded over the 8 devices stays sharded:
    # the compiled metric gathers nothing across devices and equals the unsharded one.
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    from jaxgrad.evaluation import pixel_perturbation

    f, p = linear_model(jax.random.key(0))
    x = jax.random.uniform(jax.random.key(1), (16, H, W, 1))
    t = jnp.arange(16) % 3
    a = gradient(f, p, x, t)
    mesh = Mesh(np.array(jax.devices()[:8]), ("data",))
    shard = NamedSharding(mesh, PartitionSpec("data"))
    xs, ts, as_ = (jax.device_put(v, shard) for v in (x, t, a))

    def curve(x, t, a):
        return pixel_perturbation(f, p, x, t, a, fractions=(0.1, 0.3, 0.5, 0.7))["logit"]

    def infid(x, t, a):
        return infidelity(f, p, x, t, a, key=jax.random.key(2), num_samples=4)

    for fn in (curve, infid):
        compiled = jax.jit(fn).lower(xs, ts, as_).compile()
        text = compiled.as_text()
        assert "all-gather" not in text and "all-to-all" not in text, fn.__name__
        np.testing.assert_allclose(compiled(xs, ts, as_), fn(x, t, a), rtol=1e-5, atol=1e-6)


def test_an_invalid_target_or_input_gives_nan_accuracy_under_jit(batch):
    x, t = batch
    f, p = linear_model(jax.random.key(0))
    a = gradient(f, p, x, t)
    bad_t = t.at[0].set(7)  # out of range, unseen by jit's checks
    bad_x = x.at[1, 0, 0, 0].set(jnp.nan)
    out = jax.jit(lambda x, t: road(f, p, x, t, a, key=None, noise=0.0, fractions=(0.5,)))(
        bad_x, bad_t
    )
    correct = np.asarray(out["correct"])[0]
    assert np.isnan(correct[:2]).all() and np.isfinite(correct[2:]).all()
    out = jax.jit(lambda x, t: deletion_insertion(f, p, x, t, a, num_steps=2))(x, bad_t)
    assert np.isnan(np.asarray(out["correct"])[:, 0]).all()


def test_road_at_every_pixel_imputes_zero_plus_noise(batch):
    x, t = batch
    f, p = linear_model(jax.random.key(0))
    a = gradient(f, p, x, t)
    out = road(f, p, x, t, a, key=None, noise=0.0, fractions=(1.0,))
    assert list(out["removed"]) == [H * W]
    np.testing.assert_allclose(
        out["logit"][0], np.asarray(f(p, jnp.zeros_like(x)))[np.arange(5), t], rtol=1e-5
    )
    # A traced or array zero noise needs no key either.
    noisy_linear_imputation(x, jnp.ones((5, H, W), bool), noise=jnp.array(0.0))


@pytest.mark.parametrize(
    "subsets, match",
    [
        (np.full((3, 5, 4), 64), "pixel indices in"),
        (np.tile(np.array([0, 1, 1, 2]), (3, 5, 1)), "must not repeat"),
        (np.tile(np.arange(4), (1, 5, 1)), "at least 2 runs"),
    ],
)
def test_given_subsets_are_checked(batch, subsets, match):
    x, t = batch
    f, p = linear_model(jax.random.key(0))
    a = gradient(f, p, x, t)
    with pytest.raises(ValueError, match=match):
        faithfulness_correlation(f, p, x, t, a, subsets=subsets)
