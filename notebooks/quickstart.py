# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # jaxgrad quickstart: explain your own JAX model
#
# jaxgrad explains any classifier written as `logit_fn(params, x) -> logits`: a Flax Linen
# module, a Flax NNX module, or a plain function. This notebook trains three small models of
# your own on scikit-learn's 8x8 digits (offline), then computes input-gradients, Integrated
# Gradients, SmoothGrad and Grad-CAM, shows them as signed maps, and evaluates them with pixel
# perturbation and a sanity check by model randomization.
#
# It runs top to bottom on a CPU runtime in about a minute, and unchanged on a GPU or TPU
# runtime (the attribution of the whole test split is sharded over every device).

# %%
# In Colab: install jaxgrad from its repository (skipped where jaxgrad is already importable).
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("jaxgrad") is None:
    subprocess.run(
        ["git", "clone", "-q", "--depth=1", "https://github.com/jaxgrad/jaxgrad.git"], check=True
    )
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", "jaxgrad"], check=True)
    sys.path.insert(0, "jaxgrad")

# %% tags=["parameters"]
# Parameters (CI runs the notebook with SMOKE = True: fewer steps and images).
SMOKE = False

# %%
import functools

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

import jaxgrad
from jaxgrad import attribution, evaluation, viz
from jaxgrad.data import eval_batches, load_dataset
from jaxgrad.drivers import attribute_dataset
from jaxgrad.sharding import data_mesh

STEPS = 60 if SMOKE else 600
print("jaxgrad", jaxgrad.__version__, "on", jax.devices())

# %% [markdown]
# ## Data: the offline digits
# `load_dataset` returns numpy dicts: `image` float32 `[N, H, W, C]` in [0, 1], `label` int32.
# Any source works the same way: `"idx:<folder>"` (MNIST-format files) or `"tfds:mnist"`.

# %%
train = load_dataset("digits", "train")
test = load_dataset("digits", "test")
print({k: v.shape for k, v in train.items()}, {k: v.shape for k, v in test.items()})


def fit(logit_fn, params, *, steps=STEPS, lr=3e-3, batch=64, seed=0):
    """A few lines of optax: cross-entropy, Adam, random batches."""
    tx = optax.adam(lr)
    opt = tx.init(params)

    @jax.jit
    def step(params, opt, x, y):
        def loss(p):
            logits = logit_fn(p, x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        value, grads = jax.value_and_grad(loss)(params)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), opt, value

    rng = np.random.default_rng(seed)
    for _ in range(steps):
        i = rng.integers(0, len(train["label"]), batch)
        params, opt, value = step(params, opt, train["image"][i], train["label"][i])
    accuracy = jnp.mean(jnp.argmax(logit_fn(params, test["image"]), -1) == test["label"])
    print(f"final batch loss {float(value):.3f}, test accuracy {float(accuracy):.3f}")
    return params


# %% [markdown]
# ## Bring your own model
# **A Flax Linen module**, written without anything from jaxgrad. `linen_logit_fn` wraps it
# into the contract and declares its internals (every submodule's output is a tap, named by
# its path), which is what the layer methods such as Grad-CAM need.

# %%
import flax.linen as nn
from flax import nnx

from jaxgrad.models import linen_logit_fn, nnx_logit_fn, tap_shapes


class MyCNN(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(16, (3, 3))(x))
        x = nn.relu(nn.Conv(32, (3, 3))(x))
        x = nn.max_pool(x, (2, 2), (2, 2))
        x = x.reshape(x.shape[0], -1)
        return nn.Dense(10)(nn.relu(nn.Dense(64)(x)))


linen_model = MyCNN()
linen_fn = linen_logit_fn(linen_model)
linen_vars = fit(linen_fn, linen_model.init(jax.random.key(0), test["image"][:1]))
print("taps:", tap_shapes(linen_fn, linen_vars, test["image"][:1]))

# %% [markdown]
# **A Flax NNX module**: `nnx_logit_fn` splits it once into `(logit_fn, params)`; the params
# are an `nnx.State`, which gradients, training and randomization act on like any pytree.


# %%
class MyNNXNet(nnx.Module):
    def __init__(self, rngs):
        self.conv = nnx.Conv(1, 16, (3, 3), rngs=rngs)
        self.hidden = nnx.Linear(16 * 8 * 8, 64, rngs=rngs)
        self.out = nnx.Linear(64, 10, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.conv(x))
        return self.out(nnx.relu(self.hidden(x.reshape(x.shape[0], -1))))


nnx_fn, nnx_params = nnx_logit_fn(MyNNXNet(nnx.Rngs(0)))
nnx_params = fit(nnx_fn, nnx_params)

# %% [markdown]
# **A plain function**: any `logit_fn(params, x)` works for the input-gradient methods, here a
# softmax regression on the pixels.


# %%
def plain_fn(params, x):
    return x.reshape(x.shape[0], -1) @ params["w"] + params["b"]


plain_params = fit(plain_fn, {"w": jnp.zeros((64, 10)), "b": jnp.zeros(10)})

# %% [markdown]
# ## Attributions
# Every method has the signature `method(logit_fn, params, x, target, *, key=None, ...)`,
# returns maps of `x`'s shape, and is pure: jit it, vmap it, shard it. Targets are one class
# per image; here the model's prediction.

# %%
x = jnp.asarray(test["image"][:8])
pred = jnp.argmax(linen_fn(linen_vars, x), -1)
methods = {
    "input-gradient": attribution.gradient,
    "Integrated Gradients": functools.partial(attribution.integrated_gradients, steps=64),
    "SmoothGrad": functools.partial(attribution.smoothgrad, num_samples=32, noise_level=0.15),
    "Grad-CAM": functools.partial(attribution.gradcam, layer="Conv_1"),
}
maps = {
    name: jax.jit(functools.partial(m, linen_fn))(linen_vars, x, pred, key=jax.random.key(1))
    for name, m in methods.items()
}
# Integrated Gradients is complete: its maps sum to f(x) - f(baseline), up to the error of
# the path integral's quadrature (more steps, smaller gap).
gap = attribution.completeness_delta(linen_fn, linen_vars, x, pred, maps["Integrated Gradients"])
print("IG completeness gap per image:", np.round(np.asarray(gap), 4))
viz.attribution_grid(
    np.asarray(x),
    list(maps.values()),
    row_titles=list(maps),
    column_titles=[f"pred {int(p)}" for p in pred],
    title="Your Linen CNN: signed maps of the predicted class",
)

# %% [markdown]
# The same calls explain the NNX module and the plain function, each for its own predicted
# class. The layer methods need a model that declares its internals: the NNX adapter does
# (its taps are the submodules' outputs, named by attribute); for a plain function,
# `jaxgrad.models.hooked_logit_fn` declares them (see the README's "Bring your own model").

# %%
nnx_pred = jnp.argmax(nnx_fn(nnx_params, x), -1)
plain_pred = jnp.argmax(plain_fn(plain_params, x), -1)
rows = [
    attribution.gradient(nnx_fn, nnx_params, x, nnx_pred),
    attribution.gradcam(nnx_fn, nnx_params, x, nnx_pred, layer="conv"),
    attribution.gradient(plain_fn, plain_params, x, plain_pred),
]
viz.attribution_grid(
    np.asarray(x),
    rows,
    row_titles=["NNX gradient", "NNX Grad-CAM", "plain gradient"],
    column_titles=[f"{int(a)} / {int(b)}" for a, b in zip(nnx_pred, plain_pred, strict=True)],
    title="Your NNX module and your plain function (columns: their predictions)",
)

# %% [markdown]
# ## On every device
# `attribute_dataset` jits the method once, shards each batch over a data mesh of all the
# devices (8 TPU cores, a GPU, or the CPU) and returns numpy arrays of the real rows.

# %%
mesh = data_mesh()
print("mesh:", dict(mesh.shape), "over", jax.devices())
n_eval = 64 if SMOKE else len(test["label"])
subset = {k: v[:n_eval] for k, v in test.items()}
batch = 8 * mesh.size
ig_all = attribute_dataset(
    attribution.integrated_gradients,
    linen_fn,
    linen_vars,
    eval_batches(subset, batch),
    mesh=mesh,
    target_from="predicted",
    num_batches=-(-n_eval // batch),
    steps=32,
)
print("IG of the test split:", ig_all.attribution.shape)

# %% [markdown]
# ## Evaluate: pixel perturbation
# Replace the most salient pixels (sum of |map| over channels) by the data set's mean and
# watch the accuracy fall; a random order is the control. A ranking that finds what the
# model relies on falls faster. Every map explains the predicted class (`ig_all.target`).
# A curve that rises again is a warning, not a win: replacing a digit's strokes by the mean
# can draw the digit anew on its black background.

# %%
xe, ye = jnp.asarray(subset["image"]), jnp.asarray(subset["label"])
pe = jnp.asarray(ig_all.target)
fractions = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5)
fill = float(train["image"].mean())
curves = {}
for name, a in {
    "Integrated Gradients": jnp.asarray(ig_all.attribution),
    "input-gradient": attribution.gradient(linen_fn, linen_vars, xe, pe),
    "random": jnp.zeros_like(xe),
}.items():
    r = evaluation.pixel_perturbation(
        linen_fn,
        linen_vars,
        xe,
        ye,
        a,
        fractions=fractions,
        order="random" if name == "random" else "most",
        fill="constant",
        fill_value=fill,
        key=jax.random.key(2),
        ties="random",
    )
    curves[name] = r["correct"].mean(axis=1)
    auc = evaluation.area_under_curve(r["fractions"], curves[name])
    print(f"{name}: area under the accuracy curve {float(auc):.3f}")

fig, ax = plt.subplots(figsize=(5, 3.5))
for name, acc in curves.items():
    ax.plot(fractions, acc, "k--" if name == "random" else "o-", label=name)
ax.set(xlabel="fraction of pixels replaced", ylabel="accuracy", title="pixel perturbation")
ax.legend()
plt.show()

# %% [markdown]
# ## Evaluate: a sanity check by model randomization
# Re-initialise the layers from the output down (cascading) and compare each stage's maps with
# the trained model's. `layer_names` finds a Linen model's layers in call order; for an NNX
# state, a dict or an Equinox module pass `layers=` (`evaluation.tree_layers` lists them). Signed rank correlation, rank correlation of absolute values, and
# `spearman_nz` (ranks over the input's non-zero pixels only) tell different stories: see the
# `sanity` notebook for the full picture.

# %%
from jaxgrad.drivers import sanity_table

layers = evaluation.layer_names(linen_vars, linen_model, x[:1])
stages = evaluation.randomization_stages(linen_vars, key=jax.random.key(3), layers=layers)
rows = sanity_table(
    {"gradient x input": attribution.gradient_x_input}, linen_fn, stages, xe[:32], ye[:32]
)
for metric in ("spearman", "spearman_abs", "spearman_nz"):
    print(
        f"{metric:>13}:",
        "  ".join(f"{r['stage']} {r['mean']:+.2f}" for r in rows if r["metric"] == metric),
    )
