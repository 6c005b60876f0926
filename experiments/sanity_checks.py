"""Cascading randomization of the MNIST CNN: what Spearman, |Spearman| and spearman_nz say.

Writes ``config.json``, ``metrics.jsonl``, ``table.json`` / ``table.csv`` (stage x method x
metric, means and 99% intervals over images), ``control.json``, ``curves.png``,
``maps.png`` and ``report.md`` (measured numbers beside the note's) into ``--workdir``.

  python -m experiments.sanity_checks --config=experiments/configs/sanity_checks.py \
      --workdir=runs/sanity
"""

from __future__ import annotations

import functools
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
    plan_training,
    purpose_key,
    train_classifier,
)
from experiments.dry_run import DryRun, abstract_images, abstract_key, integrated_gradients_program
from jaxgrad import sharding as shd
from jaxgrad.attribution import gradient, gradient_x_input, integrated_gradients, smoothgrad
from jaxgrad.data import source_shape
from jaxgrad.drivers import mean_ci99, sanity_table
from jaxgrad.evaluation import (
    area_under_curve,
    layer_names,
    pixel_perturbation,
    randomization_stages,
    spearman_nz,
)
from jaxgrad.models import linen_logit_fn
from jaxgrad.training import classifier_loss


def control(x: np.ndarray, key: jax.Array, draws: int) -> dict:
    """The note's Remark 1: spearman_nz between x * r1 and x * r2 for random vectors r.

    Reported for two distributions of r (standard normal, uniform on [0, 1]); per image the
    mean over ``draws`` pairs, then the mean over images with a 99% interval.
    """
    x = jnp.asarray(x)
    out = {}
    for name, sample in {
        "normal": lambda k, s: jax.random.normal(k, s),
        "uniform01": lambda k, s: jax.random.uniform(k, s),
    }.items():

        def one(k, sample=sample):
            k1, k2 = jax.random.split(k)
            return spearman_nz(x * sample(k1, x.shape), x * sample(k2, x.shape), x)

        vals = jax.jit(jax.vmap(one))(jax.random.split(jax.random.fold_in(key, len(out)), draws))
        per_image = np.asarray(jnp.mean(vals, axis=0))
        mean, lo, hi = mean_ci99(np.asarray(vals).ravel())
        out[name] = {
            "mean": mean,
            "ci99_low": lo,
            "ci99_high": hi,
            "per_image_mean": float(per_image.mean()),
            "pairs": int(vals.size),
        }
    return out


def pixel_perturbation_curves(trained, variables, test, p, key) -> dict:
    """Accuracy as IG's most / least salient pixels, or random ones (``key``), are set to black."""
    x = jnp.asarray(test["image"][: p.num_images])
    y = jnp.asarray(test["label"][: p.num_images])
    ig = jax.jit(
        lambda v, xx, yy: integrated_gradients(
            trained.logit_fn, v, xx, yy, steps=p.ig_steps, chunk_size=16
        )
    )
    attr = jnp.concatenate(
        [ig(variables, x[i : i + 100], y[i : i + 100]) for i in range(0, len(x), 100)]
    )
    out = {"fractions": list(p.fractions), "num_images": int(len(x))}
    for order in ("most", "least", "random"):
        r = pixel_perturbation(
            trained.logit_fn,
            variables,
            x,
            y,
            attr,
            fractions=p.fractions,
            order=order,
            aggregate="abs_sum",
            fill="constant",
            fill_value=0.0,
            key=key,
            chunk_size=2,
        )
        acc = np.asarray(r["correct"].mean(axis=1))
        out[order] = {
            "accuracy": acc.tolist(),
            "auc": float(area_under_curve(r["fractions"], jnp.asarray(acc))),
        }
    return out


def attribution_methods(s) -> dict:
    """The compared methods of the ``sanity`` section: IG, gradient x input, gradient, SmoothGrad."""
    return {
        "integrated_gradients": functools.partial(
            integrated_gradients, steps=s.ig_steps, chunk_size=s.ig_chunk_size
        ),
        "gradient_x_input": gradient_x_input,
        "gradient": gradient,
        "smoothgrad": functools.partial(
            smoothgrad, num_samples=s.smoothgrad_samples, noise_level=s.noise_level
        ),
    }


def cascading_stages(seed: int, model, variables, sample, stddev: float) -> list:
    """The trained variables, then the cascading randomization from the output layer down.

    Layers in the model's call order (``layer_names`` on ``sample``); the re-initialisation
    key is ``purpose_key(seed, Purpose.RANDOMIZATION)``.
    """
    layers = layer_names(variables, model, sample)  # call order, output first
    return randomization_stages(
        variables,
        key=purpose_key(seed, Purpose.RANDOMIZATION),
        layers=layers,
        stddev=stddev,
    )


def run(config, workdir: str | Path) -> dict:
    """Runs the experiment into ``workdir`` and returns the results."""
    t0 = time.perf_counter()
    workdir = report.workdir_path(workdir)
    report.write_config(workdir, config)
    train, test = load_splits(config.data)
    trained = train_classifier(config, train, test, workdir)
    variables = shd.to_host(trained.variables)
    s = config.evaluation.sanity
    x = jnp.asarray(test["image"][: s.num_images])
    y = jnp.asarray(test["label"][: s.num_images])
    stages = cascading_stages(config.seed, trained.model, variables, x[:1], s.stddev)
    methods = attribution_methods(s)
    print(
        f"attributing {len(x)} images x {len(stages)} stages x {len(methods)} methods", flush=True
    )
    noise_key = purpose_key(config.seed, Purpose.ATTRIBUTION_NOISE)
    rows = sanity_table(methods, trained.logit_fn, stages, x, y, key=noise_key)
    ctrl = control(np.asarray(x), purpose_key(config.seed, Purpose.CONTROL), s.control_draws)
    perturbation = pixel_perturbation_curves(
        trained,
        variables,
        test,
        config.evaluation.perturbation,
        purpose_key(config.seed, Purpose.PERTURBATION_ORDER),
    )
    results = {
        "perturbation": perturbation,
        "test_accuracy": trained.test_metrics["accuracy"],
        "stages": [name for name, _ in stages],
        "table": rows,
        "control": ctrl,
        "seconds": time.perf_counter() - t0,
    }
    # maps.png: signed IG of the first 6 images, trained and at every stage.
    ig = jax.jit(lambda p: methods["integrated_gradients"](trained.logit_fn, p, x[:6], y[:6]))
    maps = [ig(v) for _, v in stages]
    reports.sanity_checks.write(workdir, config, results, images=x[:6], maps=maps)
    return results


def plan(config, dry: DryRun) -> None:
    """The run's programs for ``--dry_run``: training, each method per stage, perturbation."""
    mesh = make_mesh(config.num_devices)
    model = make_model(config.model, config.data.num_classes)
    loss = classifier_loss(model)
    variables = plan_training(dry, "classifier", model, loss, config.data, config.train, mesh)
    lf = linen_logit_fn(model)
    _, shape = source_shape(config.data.source, "test")
    s, p = config.evaluation.sanity, config.evaluation.perturbation
    num_stages = len(variables["params"]) + 1  # the trained model, then one per layer
    x, y = abstract_images(s.num_images, shape)
    ig_fn = integrated_gradients_program(lf)
    for name, method in attribution_methods(s).items():
        if name == "integrated_gradients":  # looped: its FLOPs from an unlooped compilation
            options = dict(steps=s.ig_steps, chunk_size=s.ig_chunk_size)
            fn, unlooped = ig_fn, {"chunk_size": None}
        else:
            fn = jax.jit(lambda v, xx, tt, k, _m=method: _m(lf, v, xx, tt, key=k))
            options, unlooped = {}, None
        dry.add(
            f"{name} ({s.num_images} images)",
            fn,
            variables,
            x,
            y,
            abstract_key(),
            calls=num_stages,
            unlooped=unlooped,
            **options,
        )
    c = min(100, p.num_images)
    x, y = abstract_images(c, shape)
    dry.add(
        f"integrated_gradients for pixel perturbation ({c} images)",
        ig_fn,
        variables,
        x,
        y,
        abstract_key(),
        steps=p.ig_steps,
        chunk_size=16,
        calls=-(-p.num_images // c),
        unlooped={"chunk_size": None},
    )
    x, y = abstract_images(p.num_images, shape)
    perturb = jax.jit(
        lambda v, xx, yy, a, k, chunk_size: pixel_perturbation(
            lf, v, xx, yy, a, fractions=p.fractions, order="least", key=k, chunk_size=chunk_size
        )["correct"],
        static_argnames="chunk_size",
    )
    dry.add(
        f"pixel perturbation ({p.num_images} images, {len(p.fractions)} fractions)",
        perturb,
        variables,
        x,
        y,
        x,
        abstract_key(),
        chunk_size=2,
        calls=3,
        unlooped={"chunk_size": None},
    )


if __name__ == "__main__":
    launch(run, "sanity_checks", "Sanity-check config.", plan)
