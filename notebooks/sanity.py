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
# # Sanity checks by model randomization: signed, absolute and `spearman_nz`
#
# Adebayo et al. (2018) re-initialised a trained network's layers from the output down
# ("cascading randomization") and found that the maps of several methods, compared by the rank
# correlation of their *absolute values*, barely change: the maps would not depend on what
# the model learned. Sundararajan & Taly's note showed that for gradient x input and
# Integrated Gradients this is the input showing through `|x * grad|`: the *signed* rank
# correlation falls to about 0 at once, and `spearman_nz` (ranks over the input's non-zero
# pixels only) sits in between. This notebook measures all three, per layer, on the offline
# digits, and shows the grid of signed maps.

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
DATA = "digits"  # or "idx:<folder of MNIST-format files>", or "tfds:mnist"

# %%
import functools

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

import jaxgrad
from jaxgrad import attribution, evaluation, viz
from jaxgrad.data import load_dataset
from jaxgrad.drivers import sanity_table
from jaxgrad.models import MnistCNN, init_variables, linen_logit_fn

print("jaxgrad", jaxgrad.__version__, "on", jax.devices())
train, test = load_dataset(DATA, "train"), load_dataset(DATA, "test")
STEPS = 60 if SMOKE else 600
N = 16 if SMOKE else 100

# %% [markdown]
# The note's network: two convolutions with max-pooling, a dense layer, ReLU, trained with
# cross-entropy.

# %%
model = MnistCNN()
logit_fn = linen_logit_fn(model)
params = init_variables(model, jax.random.key(0), jnp.asarray(test["image"][:1]))
tx = optax.adam(1e-3)
opt = tx.init(params)


@jax.jit
def step(params, opt, x, y):
    def loss(p):
        return optax.softmax_cross_entropy_with_integer_labels(logit_fn(p, x), y).mean()

    grads = jax.grad(loss)(params)
    updates, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), opt


rng = np.random.default_rng(0)
for _ in range(STEPS):
    i = rng.integers(0, len(train["label"]), 64)
    params, opt = step(params, opt, train["image"][i], train["label"][i])
accuracy = jnp.mean(jnp.argmax(logit_fn(params, test["image"]), -1) == test["label"])
print(f"test accuracy {float(accuracy):.3f}")

# %% [markdown]
# ## Cascading randomization
# `layer_names` gives the model's layers in call order; `randomization_stages` returns the
# trained params and one copy per stage, each re-initialising one more layer from the output
# down (truncated normal, std 0.01, as the note). Any params pytree works (an NNX state, a
# dict, an Equinox module's arrays) given the layer paths.

# %%
x, y = jnp.asarray(test["image"][:N]), jnp.asarray(test["label"][:N])
layers = evaluation.layer_names(params, model, x[:1])
stages = evaluation.randomization_stages(params, key=jax.random.key(1), layers=layers)
print("stages:", [name for name, _ in stages])
methods = {
    "gradient": attribution.gradient,
    "gradient x input": attribution.gradient_x_input,
    "Integrated Gradients": functools.partial(
        attribution.integrated_gradients, steps=16 if SMOKE else 64, chunk_size=16
    ),
}
rows = sanity_table(methods, logit_fn, stages, x, y)

# %% [markdown]
# ## Three rank correlations per stage
# Means over the test images with 99% intervals (bands): the signed Spearman correlation, the
# Spearman correlation of absolute values (Adebayo et al.'s), and `spearman_nz`.

# %%
names = [name for name, _ in stages]
metrics = {"spearman": "signed", "spearman_abs": "absolute", "spearman_nz": "spearman_nz"}
by = {(r["stage"], r["method"], r["metric"]): r for r in rows}
fig, axes = plt.subplots(1, len(methods), figsize=(4.2 * len(methods), 3.6), squeeze=False)
for ax, method in zip(axes[0], methods, strict=True):
    for metric, label in metrics.items():
        mean = [by[(s, method, metric)]["mean"] for s in names]
        low = [by[(s, method, metric)]["ci99_low"] for s in names]
        high = [by[(s, method, metric)]["ci99_high"] for s in names]
        (line,) = ax.plot(range(len(names)), mean, "o-", label=label)
        ax.fill_between(range(len(names)), low, high, alpha=0.2, color=line.get_color())
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.set_xticks(range(len(names)), names, rotation=30, fontsize=7)
    ax.set_title(method, fontsize=9)
    ax.set_ylabel("rank correlation with the trained map")
    ax.legend(fontsize=7)
fig.tight_layout()
plt.show()
for method in methods:
    last = {m: by[(names[-1], method, m)]["mean"] for m in metrics}
    print(
        f"{method:>20}, every layer random: "
        + ", ".join(f"{metrics[m]} {v:+.2f}" for m, v in last.items())
    )

# %% [markdown]
# ## The maps themselves
# Signed Integrated Gradients of six images, trained and after each stage. The signed
# correlations above say how much of the sign pattern survives each stage; the digit's outline
# (where `x` is non-zero) bounds every map, whatever the weights, and that is much of what
# `|IG|` compares.

# %%
ig = jax.jit(lambda p: methods["Integrated Gradients"](logit_fn, p, x[:6], y[:6]))
viz.attribution_grid(
    np.asarray(x[:6]),
    [ig(p) for _, p in stages],
    row_titles=names,
    title="Signed IG, trained then cascading randomization",
)

# %% [markdown]
# ## The note's control
# `spearman_nz` between `x * r1` and `x * r2` for two independent random vectors: the level a
# map that knows nothing but the input reaches. Compare it with the plateau above.

# %%
k1, k2 = jax.random.split(jax.random.key(2))
r1, r2 = jax.random.normal(k1, x.shape), jax.random.normal(k2, x.shape)
control = evaluation.spearman_nz(x * r1, x * r2, x)
print(f"control spearman_nz (normal r): {float(control.mean()):.3f}")

# %% [markdown]
# At full size (MNIST, 10,000 random pairs for the control, pixel perturbation with IG) run
# `python -m experiments.sanity_checks` from the repository.
