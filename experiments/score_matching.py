"""Srinivas & Fleuret (2021) at MNIST scale: the four training objectives compared.

Cross-entropy alone, + score matching, + anti-score-matching and + gradient norm, compared by
accuracy, Hessian trace, GAN-test, discriminative pixel perturbation and the density-ratio
profile.

Writes ``config.json``, ``results.json``, ``samples.png``, ``gradients.png``, ``curves.png``
and ``report.md`` into ``--workdir``.

  python -m experiments.score_matching --config=experiments/configs/score_matching.py \
      --workdir=runs/score_matching
"""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from experiments import report, reports
from experiments.common import (
    Purpose,
    launch,
    load_splits,
    make_mesh,
    make_model,
    override,
    purpose_key,
    train_model,
)
from jaxgrad.attribution import gradient
from jaxgrad.evaluation import (
    area_under_curve,
    density_ratio_profile,
    gan_test_accuracy,
    gradient_ascent,
    pixel_perturbation,
)
from jaxgrad.gradients import select_logits
from jaxgrad.score_matching import PAPER_DEFAULTS
from jaxgrad.trace_estimators import hessian_trace_hutchinson
from jaxgrad.training import classifier_loss, regularized_classifier_loss


# Compiled once per logit function (the four objectives share one) with the params as an
# argument, not a constant baked into each model's program.
@functools.partial(jax.jit, static_argnums=0, static_argnames="num_probes")
def _hessian_trace(lf, variables, x, y, key, *, num_probes):
    """Hutchinson's trace of the label's logit with Rademacher probes (jvp of the vjp)."""
    return hessian_trace_hutchinson(
        lambda z: select_logits(lf(variables, z), y), x, key=key, num_probes=num_probes
    )


@functools.partial(jax.jit, static_argnums=0, static_argnames="steps")
def _activation_maximisation(lf, variables, x0, target, step_size, weight_decay, *, steps):
    return gradient_ascent(
        lf, variables, x0, target, step_size=step_size, steps=steps, weight_decay=weight_decay
    )


@functools.partial(jax.jit, static_argnums=0, static_argnames="num_samples")
def _density_ratio(lf, variables, x, y, key, sigmas, *, num_samples):
    return density_ratio_profile(
        lf, variables, x, y, key=key, sigmas=sigmas, num_samples=num_samples, chunk_size=4
    )


def measure(config, objective, trained, judge, test) -> tuple[dict, np.ndarray, np.ndarray]:
    """Every measurement of one trained model.

    Returns its results row, its activation-maximisation samples and its input-gradients of
    the pixel-perturbation images. Each measurement draws from its own key, the same for every model (common random numbers:
    the objectives are compared on the same probes, starting points and noise).
    """
    lf, variables = trained.logit_fn, trained.variables
    e = config.evaluation
    out = {"test_accuracy": trained.test_metrics["accuracy"]}
    n = e.trace.num_images
    x, y = jnp.asarray(test["image"][:n]), jnp.asarray(test["label"][:n])

    probes = purpose_key(config.seed, Purpose.TRACE_PROBES)
    tr = np.concatenate(
        [
            _hessian_trace(  # new probes for every chunk of 64 images
                lf,
                variables,
                x[i : i + 64],
                y[i : i + 64],
                jax.random.fold_in(probes, i),
                num_probes=e.trace.num_probes,
            )
            for i in range(0, n, 64)
        ]
    )
    out["hessian_trace"] = {"mean": float(tr.mean()), "median": float(np.median(tr))}
    # GAN-test: activation maximisation from noise, judged by the proxy.
    g = e.gan_test
    targets = jnp.arange(g.num_samples) % 10
    start_key = purpose_key(config.seed, Purpose.START_NOISE)
    x0 = jnp.clip(0.5 + 0.2 * jax.random.normal(start_key, (g.num_samples, *x.shape[1:])), 0.0, 1.0)
    samples = _activation_maximisation(
        lf, variables, x0, targets, g.step_size, g.weight_decay, steps=g.steps
    )
    out["gan_test_accuracy"] = float(
        gan_test_accuracy(judge.logit_fn, judge.variables, samples, targets).mean()
    )
    out["self_accuracy_on_samples"] = float(
        jnp.mean(jnp.argmax(lf(variables, samples), -1) == targets)
    )
    # Discriminative pixel perturbation: least salient pixels by the model's own gradient
    # replaced by the image mean (the paper's text); accuracy. Random order as the control.
    p = e.perturbation
    xp, yp = jnp.asarray(test["image"][: p.num_images]), jnp.asarray(test["label"][: p.num_images])
    attr = gradient(lf, variables, xp, yp)
    out["pixel_perturbation"] = {"fractions": list(p.fractions)}
    for order in ("least", "random"):
        r = pixel_perturbation(
            lf,
            variables,
            xp,
            yp,
            attr,
            fractions=p.fractions,
            order=order,
            aggregate="abs_sum",
            fill="image_mean",
            key=purpose_key(config.seed, Purpose.PERTURBATION_ORDER),
            chunk_size=2,
        )
        acc = jnp.mean(r["correct"], axis=1)
        out["pixel_perturbation"][order] = {
            "accuracy": np.asarray(acc).tolist(),
            "auc": float(area_under_curve(r["fractions"], acc)),
        }
    # Density-ratio profile E[exp(f_y(x + eta) - f_y(x))] over noise levels.
    d = e.density_ratio
    xd, yd = jnp.asarray(test["image"][: d.num_images]), jnp.asarray(test["label"][: d.num_images])
    sigmas = jnp.asarray(d.sigmas, jnp.float32)
    noise = purpose_key(config.seed, Purpose.DENSITY_NOISE)
    prof = np.asarray(
        _density_ratio(lf, variables, xd, yd, noise, sigmas, num_samples=d.num_samples)
    )
    out["density_ratio"] = {
        "sigmas": list(d.sigmas),
        "mean": prof.mean(1).tolist(),
        "median": np.median(prof, 1).tolist(),
        "fraction_above_1": (prof > 1).mean(1).tolist(),
    }
    out["hyper"] = PAPER_DEFAULTS[objective]
    return out, np.asarray(samples), np.asarray(attr)


def run(config, workdir: str | Path) -> dict:
    """Runs the experiment into ``workdir``."""
    t0 = time.perf_counter()
    workdir = Path(workdir).absolute()
    report.write_config(workdir, config)
    train, test = load_splits(config.data)
    mesh = make_mesh(config.num_devices)
    judge_config = config.evaluation.gan_test.judge
    print("training the GAN-test judge (ReLU CNN, another seed)", flush=True)
    judge_model = make_model(
        override(config.model, activation=judge_config.activation, beta=judge_config.beta),
        config.data.num_classes,
    )
    judge = train_model(
        judge_model,
        classifier_loss(judge_model),
        train,
        override(config.train, epochs=judge_config.epochs),
        key=purpose_key(config.seed, Purpose.JUDGE),
        test=test,
        mesh=mesh,
    )
    results = {"judge_test_accuracy": judge.test_metrics["accuracy"]}
    model = make_model(config.model, config.data.num_classes)
    # A paired comparison: the four objectives start from one initialisation and see one
    # batch order, so the objective is the only difference between the models.
    key = purpose_key(config.seed, Purpose.MODEL)
    samples, maps = {}, {}
    for objective in config.train.objectives:
        print(f"training with {reports.score_matching.NAMES[objective]}", flush=True)
        loss = regularized_classifier_loss(model, kind=objective)
        trained = train_model(model, loss, train, config.train, key=key, test=test, mesh=mesh)
        row, samples[objective], maps[objective] = measure(config, objective, trained, judge, test)
        results[objective] = row
        headline = ("test_accuracy", "gan_test_accuracy", "hessian_trace")
        print(json.dumps({objective: {k: row[k] for k in headline}}), flush=True)
    out = {"results": results, "seconds": time.perf_counter() - t0}
    reports.score_matching.write(
        workdir, config, out, images=test["image"], samples=samples, gradients=maps
    )
    return out


if __name__ == "__main__":
    launch(run, "score_matching", "Score-matching config.")
