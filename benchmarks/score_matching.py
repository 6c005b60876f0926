"""Cost of score matching: regularized training steps and Hessian-trace estimators.

  python benchmarks/score_matching.py [--models cnn,resnet18] [--batch-size 64] [--steps 3]

Prints one JSON object (progress lines go to stderr). For each model (the MNIST CNN at
28x28, softplus; the softplus CIFAR ResNet-18 at 32x32x3), at the given batch:

* ``train_step``: seconds of one jitted training step (SGD, compilation excluded) for plain
  cross-entropy and each regularizer of Srinivas & Fleuret (2021), Eq. 4 (gradient norm,
  score matching with the Taylor trace, score matching with one Hutchinson probe,
  anti-score-matching), and each one's ratio to cross-entropy. Targets: Taylor <= 4x,
  Hutchinson (one probe) <= 6x.
* ``trace``: seconds of each trace estimator (Taylor with 1 sample, Hutchinson with 1 probe
  by jvp and by vjp) relative to one input-gradient pass.
* ``exact_trace_scaling`` (CNN only): the exact trace's time as the input dimension D grows
  (square images of side 4..16, so D = 16..256), with a least-squares fit
  ``t = a + b D`` and its R^2, and the time per basis direction relative to one
  Hessian-vector product at the same size. The exact trace makes D products, so it is linear
  in D at a fixed cost per product; a CNN's cost per product itself grows with the image
  size, which makes the raw time grow faster than D.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _common import machine_info

from jaxgrad.gradients import hvp, input_gradients, select_logits
from jaxgrad.models import MnistCNN, ResNet18, init_variables, linen_logit_fn
from jaxgrad.trace_estimators import (
    hessian_trace_exact,
    hessian_trace_hutchinson,
    hessian_trace_taylor,
)
from jaxgrad.training import create_train_state, make_train_step, regularized_classifier_loss

SHAPES = {"cnn": (28, 28, 1), "resnet18": (32, 32, 3)}
KINDS = {
    "cross_entropy": dict(kind="none"),
    "gradient_norm": dict(kind="gradient_norm"),
    "score_matching_taylor": dict(kind="score_matching"),
    "score_matching_hutchinson_1probe": dict(
        kind="score_matching", trace_estimator=hessian_trace_hutchinson
    ),
    "anti_score_matching_taylor": dict(kind="anti_score_matching"),
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def timed(fn, *args, steps: int) -> tuple[float, float]:
    """(median seconds per call after a warm-up call, seconds of the warm-up call)."""
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return float(np.median(times)), first


def make_model(name: str):
    if name == "cnn":
        return MnistCNN(activation="softplus", beta=10.0)
    return ResNet18(num_classes=10, activation="softplus", beta=10.0)


def _loss_of(step, batch):
    return lambda state: step(state, batch, jax.random.key(1))[1]["loss"]


def _exact_trace_fn(logit_fn, y, chunk_size):
    def fn(variables, x):
        return hessian_trace_exact(
            lambda z: select_logits(logit_fn(variables, z), y), x, chunk_size=chunk_size
        )

    return jax.jit(fn)


def make_batch(name: str, batch_size: int) -> dict:
    rng = np.random.default_rng(0)
    return {
        "image": jnp.asarray(rng.uniform(size=(batch_size, *SHAPES[name])), jnp.float32),
        "label": jnp.asarray(rng.integers(0, 10, batch_size), jnp.int32),
        "mask": jnp.ones((batch_size,), jnp.float32),
    }


def bench_train_steps(name: str, batch_size: int, steps: int, kinds=tuple(KINDS)) -> dict:
    """Seconds of each regularized step (``kinds``, with ``cross_entropy``) and ratio to CE."""
    model = make_model(name)
    batch = make_batch(name, batch_size)
    tx = optax.sgd(0.01, momentum=0.9)
    base = create_train_state(model, tx, jax.random.key(0), batch["image"][:1])
    out = {}
    for label in ("cross_entropy", *(k for k in kinds if k != "cross_entropy")):
        kw = KINDS[label]
        step = make_train_step(regularized_classifier_loss(model, **kw), tx, donate=False)
        sec, first = timed(_loss_of(step, batch), base, steps=steps)
        out[label] = {"step_s": sec, "compile_and_first_s": first}
        log(f"{name} train step {label}: {sec:.3f} s")
    ce = out["cross_entropy"]["step_s"]
    for row in out.values():
        row["ratio_to_cross_entropy"] = row["step_s"] / ce
    return out


def bench_traces(name: str, batch_size: int, steps: int) -> dict:
    model = make_model(name)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(size=(batch_size, *SHAPES[name])), jnp.float32)
    y = jnp.asarray(rng.integers(0, 10, batch_size), jnp.int32)
    variables = jax.jit(init_variables, static_argnums=0)(model, jax.random.key(0), x[:1])
    logit_fn = linen_logit_fn(model)
    f = lambda v, z: select_logits(logit_fn(v, z), y)  # noqa: E731
    key = jax.random.key(2)
    fns = {
        "input_gradient": jax.jit(lambda v, z: input_gradients(logit_fn, v, z, y)),
        "taylor_1sample": jax.jit(
            lambda v, z: hessian_trace_taylor(functools.partial(f, v), z, key=key)
        ),
        "hutchinson_1probe_jvp": jax.jit(
            lambda v, z: hessian_trace_hutchinson(
                functools.partial(f, v), z, key=key, product="jvp"
            )
        ),
        "hutchinson_1probe_vjp": jax.jit(
            lambda v, z: hessian_trace_hutchinson(
                functools.partial(f, v), z, key=key, product="vjp"
            )
        ),
    }
    out = {}
    for label, fn in fns.items():
        sec, first = timed(fn, variables, x, steps=steps)
        out[label] = {"seconds": sec, "compile_and_first_s": first}
        log(f"{name} {label}: {sec:.4f} s")
    base = out["input_gradient"]["seconds"]
    for row in out.values():
        row["ratio_to_input_gradient"] = row["seconds"] / base
    return out


def bench_exact_scaling(
    batch_size: int, steps: int, sides=(4, 8, 12, 16), chunk_size: int = 64
) -> dict:
    model = make_model("cnn")
    rows = []
    for side in sides:
        x = jnp.asarray(
            np.random.default_rng(0).uniform(size=(batch_size, side, side, 1)), jnp.float32
        )
        y = jnp.zeros((batch_size,), jnp.int32)
        variables = init_variables(model, jax.random.key(0), x[:1])
        logit_fn = linen_logit_fn(model)
        fn = _exact_trace_fn(logit_fn, y, chunk_size)
        sec, _ = timed(fn, variables, x, steps=steps)
        one_hvp = jax.jit(
            lambda v, z, y=y, lf=logit_fn: hvp(lambda w: select_logits(lf(v, w), y), z, z)
        )
        hvp_sec, _ = timed(one_hvp, variables, x, steps=steps)
        rows.append(
            {
                "side": side,
                "D": side * side,
                "seconds": sec,
                "one_hvp_seconds": hvp_sec,
                "seconds_per_direction_over_one_hvp": sec / (side * side * hvp_sec),
            }
        )
        log(f"exact trace D={side * side}: {sec:.3f} s")
    d = np.array([r["D"] for r in rows], float)
    t = np.array([r["seconds"] for r in rows])
    b, a = np.polyfit(d, t, 1)
    r2 = 1 - np.sum((t - (a + b * d)) ** 2) / np.sum((t - t.mean()) ** 2)
    return {
        "batch_size": batch_size,
        "chunk_size": chunk_size,
        "rows": rows,
        "fit_seconds": {"intercept": float(a), "per_dimension": float(b), "r2": float(r2)},
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--models", default="cnn,resnet18")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--skip-scaling", action="store_true")
    a = p.parse_args()
    out = {
        "machine": machine_info(),
        "batch_size": a.batch_size,
        "timed_calls": a.steps,
        "results": {},
    }
    for name in filter(None, a.models.split(",")):  # --models "" times the scaling only
        out["results"][name] = {
            "trace": bench_traces(name, a.batch_size, a.steps),
            "train_step": bench_train_steps(name, a.batch_size, a.steps),
        }
    if not a.skip_scaling:
        out["exact_trace_scaling"] = bench_exact_scaling(8, a.steps)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
