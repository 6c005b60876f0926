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
# # Rethinking the role of gradient-based attribution (Srinivas & Fleuret, ICLR 2021)
#
# Three claims, each measured on the offline digits in about a minute on a CPU:
# 1. **Same classifier, any gradients.** Softmax is unchanged by adding one function `g(x)` to
#    every logit, so the input-gradients of the logits are not fixed by the classifier.
# 2. **Gradients are the score of an implicit density.** Read as an energy model, the logits
#    define `log p(x | y) = f_y(x) - log Z(theta)`, whose gradient is the input-gradient.
# 3. **Score matching aligns that density with the data.** Training with cross-entropy plus the
#    score-matching regularizer (Eq. 4) puts the data at peaks of `p(x | y)`, which a
#    density-ratio profile shows.

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
from jaxgrad import viz
from jaxgrad.data import load_dataset
from jaxgrad.evaluation import density_ratio_profile
from jaxgrad.models import MnistCNN, init_variables, linen_logit_fn

print("jaxgrad", jaxgrad.__version__, "on", jax.devices())
train, test = load_dataset(DATA, "train"), load_dataset(DATA, "test")
STEPS = 40 if SMOKE else 400
x, y = jnp.asarray(test["image"][:8]), jnp.asarray(test["label"][:8])


def fit(logit_fn, params, *, kind="none", steps=STEPS, lr=3e-3, batch=64, seed=0):
    """Adam on Eq. 4's loss: cross-entropy + lambda x regularizer (the paper's lambda, mu, sigma)."""
    tx = optax.adam(lr)
    opt = tx.init(params)

    @jax.jit
    def step(params, opt, x, y, key):
        def loss(p):
            return jaxgrad.regularized_loss(logit_fn, p, x, y, kind=kind, key=key).mean()

        value, grads = jax.value_and_grad(loss)(params)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), opt, value

    rng, key = np.random.default_rng(seed), jax.random.key(seed)
    for t in range(steps):
        i = rng.integers(0, len(train["label"]), batch)
        batch_key = jax.random.fold_in(key, t)
        params, opt, value = step(params, opt, train["image"][i], train["label"][i], batch_key)
    accuracy = jnp.mean(jnp.argmax(logit_fn(params, test["image"]), -1) == test["label"])
    print(f"{kind}: final batch loss {float(value):.3f}, test accuracy {float(accuracy):.3f}")
    return params


# %% [markdown]
# A smooth CNN (softplus with beta 10, average pooling): score matching estimates the Hessian
# trace by finite differences, which a network with ReLU or max-pooling kinks would defeat.

# %%
model = MnistCNN(features=(16, 32), dense=128, activation="softplus", beta=10.0, pooling="avg")
logit_fn = linen_logit_fn(model)
init = init_variables(model, jax.random.key(0), x[:1])
baseline = fit(logit_fn, init)

# %% [markdown]
# ## 1. Same classifier, any gradients
# `shift_to_target_map` adds `g(x) = <m, x> - f_c(x)` to every logit: the softmax is exactly
# the same, while class `c`'s gradient becomes the pattern `m`, on every input.

# %%
c = 3
h, w, ch = x.shape[1:]
yy, xx = np.mgrid[0:h, 0:w] / (h - 1)
m = np.exp(-((yy - xx) ** 2) / 0.02) + np.exp(-((yy + xx - 1) ** 2) / 0.02)  # a cross
m = jnp.asarray((m - m.mean()) / np.linalg.norm(m - m.mean()))[..., None]
shifted = jaxgrad.shift_to_target_map(logit_fn, c, m)
p0 = jax.nn.softmax(logit_fn(baseline, test["image"]))
p1 = jax.nn.softmax(shifted(baseline, test["image"]))
print("largest change of a softmax probability:", float(jnp.max(jnp.abs(p1 - p0))))
print("same predictions:", bool(jnp.all(p0.argmax(-1) == p1.argmax(-1))))
target = jnp.full_like(y, c)
before = jaxgrad.input_gradients(logit_fn, baseline, x, target)
after = jaxgrad.input_gradients(shifted, baseline, x, target)
print("cosine(gradient, m) after the shift:", jaxgrad.cosine_similarity(after, m).round(4))
viz.attribution_grid(
    np.asarray(x),
    [before, after],
    row_titles=[f"grad f_{c}", f"grad (f_{c} + g)"],
    title="Same softmax, replaced gradients",
)

# %% [markdown]
# ## 2. The implicit density and its score
# `log_density(logit_fn, params, x, y)` is `f_y(x)`, `log p(x | y)` up to the constant
# `log Z`; `score` is its gradient, the input-gradient. The constant cancels in any
# difference, so the density *ratio* between two inputs is exact:
# `p(x' | y) / p(x | y) = exp(f_y(x') - f_y(x))`.

# %%
s = jaxgrad.score(logit_fn, baseline, x, y)
assert jnp.allclose(s, jaxgrad.input_gradients(logit_fn, baseline, x, y))
# A finite-difference check of the score along a random direction. GPUs and TPUs multiply
# float32 matrices at reduced precision by default (TF32, bfloat16 passes), which a
# difference quotient amplifies 1,000 times: the check runs at full float32 precision.
v = jax.random.normal(jax.random.key(1), x.shape)
eps = 1e-3
with jax.default_matmul_precision("highest"):
    fd = (
        jaxgrad.log_density(logit_fn, baseline, x + eps * v, y)
        - jaxgrad.log_density(logit_fn, baseline, x - eps * v, y)
    ) / (2 * eps)
    autodiff = jnp.sum(jaxgrad.score(logit_fn, baseline, x, y) * v, axis=(1, 2, 3))
print("directional derivative, autodiff:", autodiff[:4])
print("directional derivative, finite differences:", fd[:4])
# Central differences in float32 at eps 1e-3: agreement to about 1e-3 of the scale.
assert jnp.allclose(autodiff, fd, rtol=1e-2, atol=1e-2 * float(jnp.abs(autodiff).max()))

# %% [markdown]
# ## 3. Score matching against cross-entropy
# The same network, the same initialisation and batches, trained with cross-entropy plus the
# score-matching regularizer (`trace of the Hessian + 1/2 |grad|^2 + mu x trace^2`, the
# trace by the paper's Taylor estimate). The density-ratio profile
# `E[exp(f_y(x + eta) - f_y(x))]`, `eta ~ N(0, sigma^2 I)`, is below 1 where the data sit at
# peaks of `p(x | y)`, above 1 where noisy inputs are *more* probable than real ones.

# %%
matched = fit(logit_fn, init, kind="score_matching")
sigmas = (0.01, 0.03, 0.1, 0.3, 0.5)
n = 32 if SMOKE else 200
xs, ys = jnp.asarray(test["image"][:n]), jnp.asarray(test["label"][:n])
ratio = jax.jit(
    functools.partial(density_ratio_profile, logit_fn, sigmas=sigmas, num_samples=16, chunk_size=4)
)
profiles = {
    "cross-entropy": ratio(baseline, xs, ys, key=jax.random.key(2)).mean(axis=1),
    "+ score matching": ratio(matched, xs, ys, key=jax.random.key(2)).mean(axis=1),
}
for name, r in profiles.items():
    print(
        f"{name:>17}:",
        "  ".join(f"sigma {s_:g}: {float(v):.3g}" for s_, v in zip(sigmas, r, strict=True)),
    )
fig, ax = plt.subplots(figsize=(5, 3.5))
for name, r in profiles.items():
    ax.plot(sigmas, r, "o-", label=name)
ax.axhline(1.0, color="grey", lw=0.8)
ax.set(xscale="log", yscale="log", xlabel="noise sigma", ylabel="density ratio")
ax.set_title("E[p(x + eta | y)] / p(x | y) over test images")
ax.legend()
plt.show()

# %% [markdown]
# The exact Hessian trace of the label's logit (every basis direction; 64 on digits) and the
# gradients of both models side by side.

# %%
trace = jax.jit(
    lambda p: jaxgrad.hessian_trace_exact(
        lambda z: jaxgrad.select_logits(logit_fn(p, z), ys[:16]), xs[:16], chunk_size=8
    )
)
for name, p in (("cross-entropy", baseline), ("+ score matching", matched)):
    print(f"{name:>17}: mean Hessian trace {float(trace(p).mean()):.3g}")
viz.attribution_grid(
    np.asarray(x),
    [
        jaxgrad.input_gradients(logit_fn, baseline, x, y),
        jaxgrad.input_gradients(logit_fn, matched, x, y),
    ],
    row_titles=["cross-entropy", "+ score matching"],
    title="Input-gradients of the label's logit",
)

# %% [markdown]
# At full size (MNIST, with the GAN-test of activation-maximisation samples, pixel
# perturbation and the anti-score-matching and gradient-norm objectives), run
# `python -m experiments.score_matching` from the repository; the README's Results section
# gives its numbers beside the paper's.
