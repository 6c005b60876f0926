"""Shift manipulation: input-gradients changed at will, classifier unchanged.

Softmax is invariant to adding ``g(x)`` to every logit, so the logit-gradients of a
classifier are not determined by the classifier (Srinivas & Fleuret 2021, arXiv 2006.09128,
Sec. 3). This main shows it twice on the digits CNN and writes into ``--workdir``:
``results.json``, ``manipulation.png`` and ``report.md``.

  python -m experiments.shift_manipulation --workdir=runs/shift_manipulation
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from experiments import report, reports
from experiments.common import (
    Purpose,
    launch,
    load_splits,
    override,
    purpose_key,
    train_classifier,
    train_model,
)
from jaxgrad import sharding as shd
from jaxgrad.gradients import (
    cosine_similarity,
    gradient_manipulation_loss,
    input_gradients,
    shift_logits,
    shift_to_target_map,
)
from jaxgrad.training import masked_mean


def target_map(name: str, shape: tuple[int, ...]) -> np.ndarray:
    """An arbitrary, image-unrelated map of the per-example ``shape`` ``[H, W, C]``, unit norm."""
    h, w, c = shape
    yy, xx = np.mgrid[0:h, 0:w] / np.array([h - 1, w - 1])[:, None, None]
    if name == "cross":
        m = np.exp(-((yy - xx) ** 2) / 0.02) + np.exp(-((yy + xx - 1) ** 2) / 0.02)
    elif name == "checkerboard":
        m = np.where((np.floor(yy * 3.999) + np.floor(xx * 3.999)) % 2 == 0, 1.0, -1.0)
    else:
        raise ValueError(f"target_map must be 'cross' or 'checkerboard', got {name!r}")
    m = np.repeat(m[..., None], c, axis=-1) - m.mean()
    return (m / np.linalg.norm(m)).astype(np.float32)


class InputMap(nn.Module):
    """``u(x)``: a learned map of the input to one number (an MLP, or linear with ``hidden=0``).

    Its output layer starts at zero, so the learned shift starts as the log-softmax.
    """

    hidden: int = 64

    @nn.compact
    def __call__(self, x, train: bool = False):
        del train
        z = x.reshape(x.shape[0], -1)
        if self.hidden:
            z = nn.softplus(nn.Dense(self.hidden, name="hidden")(z))
        return nn.Dense(1, kernel_init=nn.initializers.zeros, name="out")(z)[:, 0]


def shift_function(logit_fn, frozen, u: nn.Module, u_params):
    """``g(x) = -logsumexp(f(x)) + u(x)``: the classifier ``f`` frozen, ``u`` learned.

    ``f_y + g = log p(y | x) + u(x)``: the same softmax as ``f`` (a shift common to every
    logit), with the input-gradient ``grad log p(y | x) + grad u``.
    """

    def g(params, x):
        del params  # the classifier's params are the frozen ones, never trained
        f = logit_fn(frozen, x)  # constants here: only u_params are trained
        return -jax.nn.logsumexp(f, axis=-1) + u.apply({"params": u_params}, x)

    return g


def learn_shift(config, trained, train, m):
    """Trains ``u`` of :func:`shift_function` with the classifier frozen; returns ``(u, params)``."""
    mc = config.manipulation
    u = InputMap(hidden=mc.shift.hidden)
    key = purpose_key(config.seed, Purpose.SHIFT)
    init = u.init(jax.random.fold_in(key, 0), jnp.asarray(train["image"][:1]))
    frozen = trained.variables

    def loss_fn(params, model_state, batch, key):
        del key
        shifted = shift_logits(
            trained.logit_fn, shift_function(trained.logit_fn, frozen, u, params)
        )
        per = gradient_manipulation_loss(
            shifted, frozen, batch["image"], batch["label"], m, alpha=mc.alpha
        )
        return masked_mean(per, batch["mask"]), (model_state, {})

    print("learning a shift with the classifier frozen", flush=True)
    fields = {k: v for k, v in mc.shift.items() if k != "hidden"}
    learned = train_model(
        u,
        loss_fn,
        train,
        override(config.train, **fields),
        key=jax.random.fold_in(key, 1),  # the batch order: not the initialisation's key
        init=init,
        mesh=trained.mesh,
    )
    return u, learned.variables["params"]


def run(config, workdir: str | Path) -> dict:
    """Runs both manipulations and returns the measured figures."""
    t0 = time.perf_counter()
    workdir = report.workdir_path(workdir)
    report.write_config(workdir, config)
    train, test = load_splits(config.data)
    trained = train_classifier(config, train, test, workdir / "base")
    logit_fn, variables = trained.logit_fn, trained.variables
    mc = config.manipulation
    m = jnp.asarray(target_map(mc.target_map, test["image"].shape[1:]))
    x, y = jnp.asarray(test["image"]), jnp.asarray(test["label"])
    grads_fn = jax.jit(input_gradients, static_argnums=0)

    # (a) Closed form: f~ = f + g with g(x) = <m, x> - f_c(x).
    shifted = shift_to_target_map(logit_fn, mc.target_class, m)
    p0 = jax.nn.softmax(jax.jit(logit_fn)(variables, x))
    p1 = jax.nn.softmax(jax.jit(shifted)(variables, x))
    g_c = grads_fn(shifted, variables, x, jnp.full_like(y, mc.target_class))
    closed = {
        "softmax_max_abs_diff": float(jnp.max(jnp.abs(p1 - p0))),
        "gradient_max_abs_error": float(jnp.max(jnp.abs(g_c - m[None]))),
        "accuracy_original": trained.test_metrics["accuracy"],
        "accuracy_shifted": float(jnp.mean(jnp.argmax(p1, -1) == y)),
        "same_predictions": bool(jnp.all(jnp.argmax(p1, -1) == jnp.argmax(p0, -1))),
    }

    # (b) Learned shift: the classifier frozen, g(x) = -logsumexp(f(x)) + u(x) added to every
    # logit, u a network trained alone.
    u, u_params = learn_shift(config, trained, train, m)
    shifted_learned = shift_logits(logit_fn, shift_function(logit_fn, variables, u, u_params))
    q = jax.nn.softmax(jax.jit(shifted_learned)(variables, x))
    g_shift = grads_fn(shifted_learned, variables, x, y)
    cos_shift = cosine_similarity(g_shift, m)
    learned_shift = {
        "softmax_max_abs_diff": float(jnp.max(jnp.abs(q - p0))),
        "same_predictions": bool(jnp.all(jnp.argmax(q, -1) == jnp.argmax(p0, -1))),
        "accuracy_shifted": float(jnp.mean(jnp.argmax(q, -1) == y)),
        "cosine_to_map_after": float(jnp.mean(cos_shift)),
        "cosine_to_map_after_min": float(jnp.min(cos_shift)),
        "cosine_to_map_after_median": float(jnp.median(cos_shift)),
    }

    # (c) Not a shift: fine-tuning the whole network with CE + alpha (1 - cos(grad f_y, m)).
    def loss_fn(params, model_state, batch, key):
        del key
        v = {"params": params, **model_state}
        per = gradient_manipulation_loss(
            logit_fn, v, batch["image"], batch["label"], m, alpha=mc.alpha
        )
        logits = logit_fn(v, batch["image"])
        acc = masked_mean(
            (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32), batch["mask"]
        )
        return masked_mean(per, batch["mask"]), (model_state, {"accuracy": acc})

    print(f"fine-tuning with alpha={mc.alpha}", flush=True)
    finetuned = train_model(
        trained.model,
        loss_fn,
        train,
        override(config.train, **mc.finetune),
        key=purpose_key(config.seed, Purpose.FINETUNE),
        init=variables,
        mesh=trained.mesh,
        metrics_path=workdir / "finetune_metrics.jsonl",
    )
    num_steps = int(shd.to_host(finetuned.state.step))
    tuned = finetuned.variables
    cos_before = cosine_similarity(grads_fn(logit_fn, variables, x, y), m)
    g_after = grads_fn(logit_fn, tuned, x, y)
    cos_after = cosine_similarity(g_after, m)
    learned = {
        "accuracy_original": trained.test_metrics["accuracy"],
        "accuracy_finetuned": trained.evaluate(tuned, test)["accuracy"],
        "cosine_to_map_before": float(jnp.mean(cos_before)),
        "cosine_to_map_after": float(jnp.mean(cos_after)),
        "cosine_to_map_after_min": float(jnp.min(cos_after)),
        "steps": num_steps,
    }
    learned["accuracy_change_points"] = 100 * (
        learned["accuracy_finetuned"] - learned["accuracy_original"]
    )
    results = {
        "closed_form": closed,
        "learned_shift": learned_shift,
        "learned": learned,
        "seconds": time.perf_counter() - t0,
        "test_images": int(len(y)),
    }

    n = config.evaluation.num_images
    reports.shift_manipulation.write(
        workdir,
        config,
        results,
        images=x[:n],
        labels=y[:n],
        original=grads_fn(logit_fn, variables, x[:n], y[:n]),
        closed_form=g_c[:n],
        learned_shift=g_shift[:n],
        finetuned=g_after[:n],
        target_map=m,
    )
    print(json.dumps(results, indent=2), flush=True)
    return results


if __name__ == "__main__":
    launch(run, "shift_manipulation", "Shift-manipulation config.")
