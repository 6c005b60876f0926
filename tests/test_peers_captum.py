"""Equality with Captum on the same weights (the ``bench`` extra: torch CPU + captum).

``make test`` installs the extra, so CI runs these. Models: an MLP and a small CNN, built in
Flax and rebuilt in PyTorch from the same weights (NHWC <-> NCHW handled explicitly).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgrad.attribution import gradient, gradient_x_input, integrated_gradients
from jaxgrad.models import MLP, MnistCNN, init_variables, linen_logit_fn

torch = pytest.importorskip(
    "torch", reason="the bench extra (torch, captum) is installed by make test"
)
captum_attr = pytest.importorskip("captum.attr")


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
            layers.append(torch.nn.ReLU())
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

    def forward(self, x):  # x: NCHW
        x = torch.max_pool2d(torch.relu(self.c1(x)), 2)
        x = torch.max_pool2d(torch.relu(self.c2(x)), 2)
        x = x.permute(0, 2, 3, 1).flatten(1)  # flatten in Flax's NHWC order
        return self.out(torch.relu(self.fc1(x)))


@pytest.fixture(scope="module", params=["mlp", "cnn"])
def pair(request):
    key = jax.random.key(0)
    if request.param == "mlp":
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
