"""Equality with Quantus 0.6 on the same weights (the ``bench`` extra: torch CPU, Quantus).

Quantus draws from NumPy's global generator; jaxgrad's metrics take explicit keys, or the
draws themselves (``subsets=``, ``perturbations=``), so the tests replay Quantus's draws
exactly (same seed, same order of calls) and ask for equality to float tolerance. ROAD is
compared with ``noise=0`` (the imputation is then deterministic; the noise itself is tested
in ``test_evaluation_metrics.py``). Model: an MLP on 8x8 one-channel images, in Flax and
rebuilt in PyTorch (one channel, so NCHW and NHWC flatten alike).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgrad.attribution import gradient
from jaxgrad.evaluation import (
    faithfulness_correlation,
    noisy_linear_imputation,
    road,
    sensitivity,
)
from jaxgrad.models import MLP, init_variables, linen_logit_fn

torch = pytest.importorskip("torch", reason="the bench extra is installed by make test")
quantus = pytest.importorskip("quantus", reason="the bench extra is installed by make test")
captum_attr = pytest.importorskip("captum.attr")


@pytest.fixture(scope="module")
def twin():
    model = MLP(hidden=(32, 16))
    x = np.asarray(jax.random.uniform(jax.random.key(1), (24, 8, 8, 1)), np.float32)
    variables = init_variables(model, jax.random.key(0), jnp.asarray(x[:1]))
    logit_fn = linen_logit_fn(model)
    p = variables["params"]
    layers = []
    for i, name in enumerate(["hidden1", "hidden2", "logits"]):
        k, b = np.asarray(p[name]["kernel"]), np.asarray(p[name]["bias"])
        lin = torch.nn.Linear(*k.shape)
        lin.weight.data, lin.bias.data = torch.tensor(k.T.copy()), torch.tensor(b.copy())
        layers += [lin, torch.nn.ReLU()] if i < 2 else [lin]
    tmodel = torch.nn.Sequential(torch.nn.Flatten(), *layers).eval()
    xt = x.transpose(0, 3, 1, 2)  # [B, 1, 8, 8] for Quantus
    np.testing.assert_allclose(
        tmodel(torch.tensor(xt)).detach().numpy(), logit_fn(variables, x), rtol=1e-4, atol=1e-5
    )
    target = np.asarray(jnp.argmax(logit_fn(variables, x), axis=-1))
    attribution = np.asarray(gradient(logit_fn, variables, x, target))
    return logit_fn, variables, x, target, attribution, tmodel, xt


def test_noisy_linear_imputation_matches_quantus():
    from quantus.functions.perturb_func import noisy_linear_imputation as q_impute

    x = np.asarray(jax.random.uniform(jax.random.key(2), (1, 9, 7, 3)), np.float64)
    rng = np.random.default_rng(0)
    for count in (1, 20, 40, 62):
        indices = rng.choice(63, count, replace=False)
        mask = np.zeros(63, bool)
        mask[indices] = True
        with jax.enable_x64(True):
            ours = noisy_linear_imputation(
                jnp.asarray(x), jnp.asarray(mask.reshape(1, 9, 7)), noise=0.0, tol=1e-12
            )
        theirs = q_impute(arr=x[0].transpose(2, 0, 1), indices=indices, noise=0.0)  # [C, H, W]
        np.testing.assert_allclose(np.asarray(ours)[0], theirs.transpose(1, 2, 0), atol=1e-9)


def test_road_matches_quantus(twin):
    logit_fn, variables, x, target, attribution, tmodel, xt = twin
    # Quantus removes int(p / 100 * 64) pixels, jaxgrad round(p / 100 * 64): the percentages
    # where both agree.
    percentages = [p for p in range(1, 100, 2) if int(64 * p / 100) == round(64 * p / 100)]
    metric = quantus.ROAD(
        percentages=percentages, noise=0.0, disable_warnings=True, display_progressbar=False
    )
    theirs = metric(
        model=tmodel,
        x_batch=xt,
        y_batch=target,
        a_batch=attribution.transpose(0, 3, 1, 2),
        device="cpu",
    )
    ours = road(
        logit_fn, variables, x, target, attribution, key=None, noise=0.0, order="most",
        aggregate="sum", fractions=np.array(percentages) / 100,
    )  # fmt: skip
    counts = np.asarray(ours["correct"]).sum(axis=1)
    np.testing.assert_array_equal(counts, np.rint(np.array([theirs[p] for p in percentages]) * 24))
    assert 0 < np.asarray(ours["correct"]).mean() < 1  # the curve does move


def test_faithfulness_correlation_matches_quantus_with_replayed_subsets(twin):
    logit_fn, variables, x, target, attribution, tmodel, xt = twin
    runs, size, seed = 30, 16, 7
    metric = quantus.FaithfulnessCorrelation(
        nr_runs=runs, subset_size=size, return_aggregate=False, disable_warnings=True,
        display_progressbar=False,
    )  # fmt: skip
    np.random.seed(seed)
    theirs = metric(
        model=tmodel,
        x_batch=xt,
        y_batch=target,
        a_batch=attribution.transpose(0, 3, 1, 2),
        device="cpu",
    )
    # Quantus's draws: per run, per example, np.random.choice(64, size, replace=False); then
    # its baseline helper draws B uniforms it does not use ("uniform" is computed for every
    # baseline choice), which the replay consumes too.
    np.random.seed(seed)
    subsets = []
    for _ in range(runs):
        subsets.append([np.random.choice(64, size, replace=False) for _ in range(len(x))])
        np.random.uniform(size=len(x))
    subsets = np.stack(subsets)
    ours = faithfulness_correlation(logit_fn, variables, x, target, attribution, subsets=subsets)
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["MaxSensitivity", "AvgSensitivity"])
def test_max_and_avg_sensitivity_match_quantus_with_replayed_noise(twin, kind):
    logit_fn, variables, x, target, attribution, tmodel, xt = twin
    n, radius, seed = 12, 0.2, 3

    def explain(model, inputs, targets, **kwargs):
        xt_ = torch.tensor(np.asarray(inputs), requires_grad=True)
        a = captum_attr.Saliency(model).attribute(xt_, target=torch.tensor(targets), abs=False)
        return a.detach().numpy()

    metric = getattr(quantus, kind)(
        nr_samples=n, lower_bound=radius, disable_warnings=True, display_progressbar=False
    )
    np.random.seed(seed)
    theirs = metric(
        model=tmodel,
        x_batch=xt,
        y_batch=target,
        a_batch=attribution.transpose(0, 3, 1, 2),
        explain_func=explain,
        device="cpu",
    )
    # Quantus's draws: per sample, np.random.uniform(-radius, radius) over the flat batch.
    np.random.seed(seed)
    noise = np.stack([np.random.uniform(-radius, radius, (len(x), 64)) for _ in range(n)]).reshape(
        n, *x.shape
    )
    reduce = "max" if kind == "MaxSensitivity" else "mean"
    ours = sensitivity(
        logit_fn, variables, x, target, key=None, method=gradient, perturbations=noise,
        reduce=reduce,
    )  # fmt: skip
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-6)
