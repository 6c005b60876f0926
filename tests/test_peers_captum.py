"""Equality with Captum on the same weights (the ``bench`` extra: torch CPU + captum).

``make test`` installs the extra, so CI runs these. Models: an MLP and a small CNN, built in
Flax and rebuilt in PyTorch from the same weights (NHWC <-> NCHW handled explicitly).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgrad import _random
from jaxgrad._filters import resize_bilinear
from jaxgrad.attribution import (
    gradcam_layer_map,
    gradient,
    gradient_x_input,
    guided_backprop,
    integrated_gradients,
    smoothgrad,
)
from jaxgrad.evaluation import infidelity, sensitivity
from jaxgrad.models import MLP, MnistCNN, init_variables, linen_logit_fn

torch = pytest.importorskip(
    "torch", reason="the bench extra (torch, captum) is installed by make test"
)
captum_attr = pytest.importorskip("captum.attr")
captum_metrics = pytest.importorskip("captum.metrics")


def torch_mlp(params):
    layers = []
    names = sorted((k for k in params if k.startswith("hidden")), key=lambda k: int(k[6:])) + [
        "logits"
    ]
    for i, name in enumerate(names):
        k, b = np.asarray(params[name]["kernel"]), np.asarray(params[name]["bias"])
        lin = torch.nn.Linear(*k.shape)
        lin.weight.data = torch.tensor(k.T.copy())
        lin.bias.data = torch.tensor(b.copy())
        layers.append(lin)
        if i < len(names) - 1:
            layers.append(torch.nn.ReLU())  # modules, so that GuidedBackprop hooks them
    return torch.nn.Sequential(torch.nn.Flatten(), *layers)


class TorchCNN(torch.nn.Module):
    def __init__(self, params):
        super().__init__()

        def conv(p):
            k = np.asarray(p["kernel"])  # HWIO
            c = torch.nn.Conv2d(k.shape[2], k.shape[3], k.shape[0], padding=k.shape[0] // 2)
            c.weight.data = torch.tensor(k.transpose(3, 2, 0, 1).copy())
            c.bias.data = torch.tensor(np.asarray(p["bias"]).copy())
            return c

        def dense(p):
            k = np.asarray(p["kernel"])
            d = torch.nn.Linear(*k.shape)
            d.weight.data = torch.tensor(k.T.copy())
            d.bias.data = torch.tensor(np.asarray(p["bias"]).copy())
            return d

        self.c1, self.c2 = conv(params["hidden1"]), conv(params["hidden2"])
        self.fc1, self.out = dense(params["fc1"]), dense(params["softmax_linear"])
        # ReLU modules (not torch.relu), so that GuidedBackprop and LayerGradCam hook them.
        self.act1, self.act2, self.act3 = torch.nn.ReLU(), torch.nn.ReLU(), torch.nn.ReLU()

    def forward(self, x):  # x: NCHW
        x = torch.max_pool2d(self.act1(self.c1(x)), 2)
        x = torch.max_pool2d(self.act2(self.c2(x)), 2)
        x = x.permute(0, 2, 3, 1).flatten(1)  # flatten in Flax's NHWC order
        return self.out(self.act3(self.fc1(x)))


@pytest.fixture(scope="module", params=["mlp", "cnn"])
def pair(request):
    return build_pair(request.param)


@pytest.fixture(scope="module")
def cnn_pair():
    return build_pair("cnn")


def build_pair(kind):
    key = jax.random.key(0)
    if kind == "mlp":
        model = MLP(hidden=(32, 16))
        x = np.asarray(jax.random.uniform(jax.random.key(1), (6, 64)), np.float32)
        variables = init_variables(model, key, jnp.asarray(x[:1]))
        tmodel, to_t, from_t = torch_mlp(variables["params"]), (lambda a: a), (lambda a: a)
    else:
        # reduce_window pooling routes a tied window's gradient to one input, as torch does.
        model = MnistCNN(pooling="reduce_window")
        x = np.asarray(jax.random.uniform(jax.random.key(1), (6, 8, 8, 1)), np.float32)
        variables = init_variables(model, key, jnp.asarray(x[:1]))
        tmodel = TorchCNN(variables["params"])
        to_t, from_t = (lambda a: a.transpose(0, 3, 1, 2)), (lambda a: a.transpose(0, 2, 3, 1))
    tmodel.eval()
    logit_fn = linen_logit_fn(model)
    np.testing.assert_allclose(
        tmodel(torch.tensor(to_t(x))).detach().numpy(),
        logit_fn(variables, jnp.asarray(x)),
        rtol=1e-4,
        atol=1e-5,
    )
    target = np.array([0, 1, 2, 3, 4, 5])
    return logit_fn, variables, x, target, tmodel, to_t, from_t


def captum(attr_cls, tmodel, x, target, to_t, from_t, **kw):
    xt = torch.tensor(to_t(x).copy(), requires_grad=True)
    out = attr_cls(tmodel).attribute(xt, target=torch.tensor(target), **kw)
    return from_t(out.detach().numpy())


def close(ours, theirs):
    scale = np.abs(theirs).max()
    np.testing.assert_allclose(np.asarray(ours), theirs, rtol=1e-5, atol=1e-5 * scale)


def test_gradient_matches_captum_saliency(pair):
    logit_fn, variables, x, target, tmodel, to_t, from_t = pair
    ours = gradient(logit_fn, variables, jnp.asarray(x), jnp.asarray(target))
    close(ours, captum(captum_attr.Saliency, tmodel, x, target, to_t, from_t, abs=False))


def test_gradient_x_input_matches_captum(pair):
    logit_fn, variables, x, target, tmodel, to_t, from_t = pair
    ours = gradient_x_input(logit_fn, variables, jnp.asarray(x), jnp.asarray(target))
    close(ours, captum(captum_attr.InputXGradient, tmodel, x, target, to_t, from_t))


@pytest.mark.parametrize(
    "rule, method",
    [
        ("gauss_legendre", "gausslegendre"),
        ("trapezoid", "riemann_trapezoid"),
        ("left", "riemann_left"),
        ("right", "riemann_right"),
        ("middle", "riemann_middle"),
    ],
)
def test_integrated_gradients_matches_captum(pair, rule, method):
    logit_fn, variables, x, target, tmodel, to_t, from_t = pair
    # A non-constant baseline, so that paths do not start on an all-tied image.
    base = np.asarray(0.1 * jax.random.uniform(jax.random.key(9), x.shape), np.float32)
    n = 32
    ig = jax.jit(
        functools.partial(integrated_gradients, logit_fn, steps=n, rule=rule, chunk_size=16)
    )
    ours = ig(variables, jnp.asarray(x), jnp.asarray(target), baseline=jnp.asarray(base))
    theirs = captum(
        captum_attr.IntegratedGradients,
        tmodel,
        x,
        target,
        to_t,
        from_t,
        n_steps=n,
        method=method,
        baselines=torch.tensor(to_t(base).copy()),
    )
    if rule == "trapezoid":
        # Captum's riemann_trapezoid puts nodes at linspace(0, 1, n) but steps of 1/n (ends
        # halved), so its weights sum to (n - 1) / n; jaxgrad's composite trapezoid uses
        # steps of 1 / (n - 1) and weights summing to 1 (completeness holds).
        ours = ours * (n - 1) / n
    close(ours, theirs)


@pytest.mark.parametrize(
    "statistic, nt_type",
    [("mean", "smoothgrad"), ("square", "smoothgrad_sq"), ("variance", "vargrad")],
)
def test_smoothgrad_matches_captum_noise_tunnel_with_the_same_noise(
    pair, statistic, nt_type, monkeypatch
):
    logit_fn, variables, x, target, tmodel, to_t, from_t = pair
    key, n, level = jax.random.key(4), 8, 0.2
    ours = smoothgrad(
        logit_fn,
        variables,
        jnp.asarray(x),
        jnp.asarray(target),
        key=key,
        num_samples=n,
        noise_level=level,
        statistic=statistic,
        chunk_size=3,
    )
    # The noise jaxgrad drew: sample s uses split(key, n)[s] -> (noise key, method key).
    axes = tuple(range(1, x.ndim))
    sigma = level * (x.max(axis=axes, keepdims=True) - x.min(axis=axes, keepdims=True))
    noise = np.stack(
        [
            sigma * np.asarray(_random.normal(jax.random.split(k)[0], x.shape, jnp.float32))
            for k in jax.random.split(key, n)
        ]
    )  # [n, B, *S]
    # Captum repeats each example n times in a row (repeat_interleave): row b * n + s.
    noise_t = torch.tensor(
        np.concatenate([to_t(noise[:, b]) for b in range(len(x))]).astype(np.float32)
    )
    nt_cls = captum_attr.NoiseTunnel
    monkeypatch.setattr(
        nt_cls,
        "_add_noise_to_input",
        staticmethod(lambda inp, stdev, parts: inp.repeat_interleave(parts, dim=0) + noise_t),
    )
    xt = torch.tensor(to_t(x).copy(), requires_grad=True)
    theirs = nt_cls(captum_attr.Saliency(tmodel)).attribute(
        xt, nt_type=nt_type, nt_samples=n, stdevs=1.0, target=torch.tensor(target), abs=False
    )
    close(ours, from_t(theirs.detach().numpy()))


def test_guided_backprop_matches_captum(pair):
    logit_fn, variables, x, target, tmodel, to_t, from_t = pair
    ours = guided_backprop(logit_fn, variables, jnp.asarray(x), jnp.asarray(target))
    close(ours, captum(captum_attr.GuidedBackprop, tmodel, x, target, to_t, from_t))


def test_gradcam_matches_captum_layer_gradcam(cnn_pair):
    logit_fn, variables, x, target, tmodel, to_t, from_t = cnn_pair
    ours = gradcam_layer_map(
        logit_fn, variables, jnp.asarray(x), jnp.asarray(target), layer="hidden2_act", relu=False
    )
    xt = torch.tensor(to_t(x).copy(), requires_grad=True)
    theirs = captum_attr.LayerGradCam(tmodel, tmodel.act2).attribute(
        xt, target=torch.tensor(target)
    )  # [B, 1, h, w]
    close(ours, theirs.detach().numpy()[:, 0])


@pytest.mark.parametrize("align_corners", [True, False])
def test_bilinear_resize_matches_torch_interpolate(align_corners):
    m = np.random.default_rng(0).random((2, 3, 5, 4)).astype(np.float32)
    ours = resize_bilinear(jnp.asarray(m), (8, 11), align_corners=align_corners)
    theirs = (
        torch.nn.functional.interpolate(
            torch.tensor(m.transpose(0, 3, 1, 2)),
            size=(8, 11),
            mode="bilinear",
            align_corners=align_corners,
        )
        .numpy()
        .transpose(0, 2, 3, 1)
    )
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


# --- Captum's two metrics, on the same weights and the same draws --------------------------


def interleave(draws, to_t):
    """``[S, B, ...]`` jaxgrad draws in Captum's order: example-major ``[B * S, ...]``."""
    d = np.asarray(draws)
    d = np.swapaxes(d, 0, 1).reshape(-1, *d.shape[2:])
    return torch.tensor(to_t(d).copy())


@pytest.mark.parametrize("normalize", [False, True])
def test_infidelity_matches_captum_with_the_same_perturbations(pair, normalize):
    logit_fn, variables, x, target, tmodel, to_t, from_t = pair
    n, sigma, key = 7, 0.05, jax.random.key(3)
    attribution = gradient(logit_fn, variables, jnp.asarray(x), jnp.asarray(target))
    kw = dict(num_samples=n, noise_scale=sigma, normalize=normalize)
    ours = infidelity(logit_fn, variables, x, target, attribution, key=key, **kw)
    # The documented draws: sample s is noise_scale * N(0, 1) from split(key, n)[s].
    draws = [sigma * _random.normal(k, x.shape) for k in jax.random.split(key, n)]
    replayed = infidelity(
        logit_fn, variables, x, target, attribution, key=None, perturbations=np.stack(draws),
        normalize=normalize,
    )  # fmt: skip
    np.testing.assert_allclose(replayed, ours, rtol=1e-6)
    pert = interleave(draws, to_t)

    def perturb_func(inputs):
        return pert, inputs - pert

    theirs = captum_metrics.infidelity(
        tmodel,
        perturb_func,
        torch.tensor(to_t(x).copy()),
        torch.tensor(to_t(np.asarray(attribution)).copy()),
        target=torch.tensor(target),
        n_perturb_samples=n,
        normalize=normalize,
    )
    np.testing.assert_allclose(ours, theirs.numpy(), rtol=2e-3, atol=1e-7)


@pytest.mark.parametrize("method", ["gradient", "integrated_gradients"])
def test_sensitivity_max_matches_captum_with_the_same_noise(pair, method):
    logit_fn, variables, x, target, tmodel, to_t, from_t = pair
    n, radius, key = 6, 0.02, jax.random.key(5)
    if method == "gradient":
        ours_method, captum_cls, kw, captum_kw = gradient, captum_attr.Saliency, {}, {"abs": False}
    else:
        ours_method, captum_cls = integrated_gradients, captum_attr.IntegratedGradients
        kw, captum_kw = {"steps": 16}, {"n_steps": 16, "method": "gausslegendre"}
    ours = sensitivity(
        logit_fn, variables, x, target, key=key, method=ours_method, radius=radius,
        num_samples=n, **kw,
    )  # fmt: skip
    # The documented draws: sample s is U[-radius, radius] from split(key, n)[s].
    draws = [
        radius * _random.uniform(k, x.shape, jnp.float32, -1.0, 1.0)
        for k in jax.random.split(key, n)
    ]
    noise = interleave(draws, to_t)

    def perturb_func(inputs, perturb_radius):
        return inputs + noise

    explain = captum_cls(tmodel).attribute
    theirs = captum_metrics.sensitivity_max(
        explain,
        torch.tensor(to_t(x).copy()),
        perturb_func=perturb_func,
        n_perturb_samples=n,
        target=torch.tensor(target),
        **captum_kw,
    )
    np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-3, atol=1e-6)


def test_square_infidelity_matches_captums_multiply_by_inputs_decorator(cnn_pair):
    logit_fn, variables, x, target, tmodel, to_t, from_t = cnn_pair
    x = x.copy()
    x[:, :3] = 0.0  # pixels equal to the baseline: Captum's I is 0 there
    n = 5
    attribution = gradient(logit_fn, variables, jnp.asarray(x), jnp.asarray(target))
    masks = np.zeros((n, *x.shape), np.float32)
    rng = np.random.default_rng(0)
    for s in range(n):
        for b in range(len(x)):
            r, c = rng.integers(0, 5, 2)
            masks[s, b, r : r + 4, c : c + 4] = 1.0
    ours = infidelity(
        logit_fn, variables, x, target, attribution, key=None, perturbation="square",
        perturbations=masks,
    )  # fmt: skip
    replay = interleave(masks, to_t)

    @captum_metrics.infidelity_perturb_func_decorator(True)
    def perturb_func(inputs, baselines):
        return inputs - replay * (inputs - baselines)

    theirs = captum_metrics.infidelity(
        tmodel,
        perturb_func,
        torch.tensor(to_t(x).copy()),
        torch.tensor(to_t(np.asarray(attribution)).copy()),
        baselines=0.0,
        target=torch.tensor(target),
        n_perturb_samples=n,
    )
    np.testing.assert_allclose(ours, theirs.numpy(), rtol=2e-3, atol=1e-7)
