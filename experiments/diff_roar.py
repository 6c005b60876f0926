"""DiffROAR of standard and PGD-trained models on real data (Shah, Jain & Netrapalli 2021).

Trains every model of ``train.models`` (standard or PGD), measures its clean and robust test
accuracy against every ball of ``evaluation.attacks``, attributes every training and test
image with |input-gradient| of the predicted logit, and retrains fresh models on the top-k and
bottom-k coordinates: DiffROAR curves per model, and a random ranking as the control.

Writes ``config.json``, ``results.json``, ``diff_roar.csv``, ``diff_roar.png`` and
``report.md`` into ``--workdir``; each model's checkpoints, metrics and TensorBoard events go
to ``checkpoints/``, ``metrics/`` and ``tensorboard/`` (a rerun resumes the trainings).

  python -m experiments.diff_roar --config=experiments/configs/diff_roar.py:cifar10 \
      --workdir=runs/diff_roar
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
    global_mean,
    launch,
    load_splits,
    make_mesh,
    make_model,
    override,
    plan_training,
    purpose_key,
    retrainer,
    train_model,
)
from experiments.dry_run import DryRun, abstract_images, abstract_key
from jaxgrad.attribution import gradient
from jaxgrad.data import source_shape
from jaxgrad.drivers import keep_ranked, roar
from jaxgrad.models import linen_logit_fn
from jaxgrad.training import adversarial_classifier_loss, classifier_loss, pgd_attack


def model_loss(model, spec, *, unroll: bool = False):
    """The training loss of one model of ``train.models``: standard or PGD (Madry et al.).

    The train section's augmentation is applied before it (by ``train_model``), so PGD
    attacks the augmented images.
    """
    if spec["pgd"] is None:
        return classifier_loss(model)
    return adversarial_classifier_loss(model, random_start=True, unroll=unroll, **spec["pgd"])


def curve_name(name: str, imputation: str) -> str:
    """A curve's name: the model's for the protocol's constant fill, ``+ ROAD`` imputed."""
    return name if imputation == "constant" else f"{name} + ROAD"


@functools.partial(jax.jit, static_argnums=0)
def _gradient_of_predicted(lf, variables, x):
    """|input-gradient| of the predicted class's logit (Shah et al.'s attribution)."""
    target = jnp.argmax(lf(variables, x), axis=-1)
    return jnp.abs(gradient(lf, variables, x, target))


@functools.partial(jax.jit, static_argnums=0, static_argnames=("norm", "steps", "unroll"))
def _robust_correct(lf, variables, x, y, key, epsilon, step_size, *, norm, steps, unroll=False):
    adv = pgd_attack(
        lf,
        variables,
        x,
        y,
        key=key,
        norm=norm,
        epsilon=epsilon,
        step_size=step_size,
        steps=steps,
        unroll=unroll,
    )
    return jnp.argmax(lf(variables, adv), axis=-1) == y


def attribute(lf, variables, data, chunk: int) -> np.ndarray:
    """Attributions of a whole split, ``chunk`` images per call."""
    x = data["image"]
    return np.concatenate(
        [
            np.asarray(_gradient_of_predicted(lf, variables, x[i : i + chunk]))
            for i in range(0, len(x), chunk)
        ]
    )


def robust_accuracy(config, lf, variables, test) -> dict:
    """Accuracy under each attack of ``evaluation.attacks`` on the first ``attack_images``."""
    e = config.evaluation
    n = min(e.attack_images, len(test["label"]))
    out = {}
    for a, attack in enumerate(e.attacks):
        key = purpose_key(config.seed, Purpose.PGD_EVAL, a)
        correct = []
        for i in range(0, n, e.attribution_chunk):
            x = jnp.asarray(test["image"][i : min(i + e.attribution_chunk, n)])
            y = jnp.asarray(test["label"][i : min(i + e.attribution_chunk, n)])
            correct.append(
                np.asarray(
                    _robust_correct(
                        lf,
                        variables,
                        x,
                        y,
                        jax.random.fold_in(key, i),
                        attack["epsilon"],
                        attack["step_size"],
                        norm=attack["norm"],
                        steps=attack["steps"],
                    )
                )
            )
        out[f"{attack['norm']}_{attack['epsilon']:.4g}"] = float(np.concatenate(correct).mean())
    return out


def run(config, workdir: str | Path) -> dict:
    """Runs the experiment into ``workdir``."""
    t0 = time.perf_counter()
    workdir = report.workdir_path(workdir)
    report.write_config(workdir, config)
    train, test = load_splits(config.data)
    mesh = make_mesh(config.num_devices)
    d = config.evaluation.diff_roar
    fill = global_mean(train["image"]) if d.fill == "data_mean" else float(d.fill)
    model = make_model(config.model, config.data.num_classes)
    lf = linen_logit_fn(model)
    retrain = retrainer(model, override(config.train, epochs=d.epochs), mesh=mesh)
    roar_options = dict(
        retrain=retrain,
        fractions=tuple(d.fractions),
        fill_value=fill,
        unit=d.unit,
        imputation_noise=d.imputation_noise,
    )
    models, curves = {}, {}
    for m, spec in enumerate(config.train.models):
        name = spec["name"]
        print(f"training the {name} model", flush=True)
        safe = name.replace("/", "_")
        trained = train_model(
            model,
            model_loss(model, spec),
            train,
            config.train,
            key=purpose_key(config.seed, Purpose.MODEL, m),
            test=test,
            mesh=mesh,
            checkpoint_dir=workdir / "checkpoints" / safe,
            metrics_path=workdir / "metrics" / f"{safe}.jsonl",
            tensorboard_dir=workdir / "tensorboard" / safe,
        )
        row = {
            "pgd": spec["pgd"],
            "runs": spec["runs"],
            "clean_accuracy": trained.test_metrics["accuracy"],
        }
        row["robust_accuracy"] = robust_accuracy(config, lf, trained.variables, test)
        models[name] = row
        print(json.dumps({name: row}), flush=True)
        chunk = config.evaluation.attribution_chunk
        a_train, a_test = (attribute(lf, trained.variables, s, chunk) for s in (train, test))
        for imputation in d.imputations:
            label = curve_name(name, imputation)
            print(f"DiffROAR of the {name} model's gradients ({imputation})", flush=True)
            curves[label] = roar(
                train,
                test,
                a_train,
                a_test,
                key=purpose_key(config.seed, Purpose.ROAR_RETRAIN, m),
                seeds=spec["runs"],
                imputation=imputation,
                # A rerun skips finished retrainings.
                record=workdir / "roar" / f"{curve_name(safe, imputation)}.json",
                **roar_options,
            )
    control = purpose_key(config.seed, Purpose.CONTROL)

    def draw(shape, split):
        return lambda s: np.asarray(
            jax.random.uniform(jax.random.fold_in(jax.random.fold_in(control, split), s), shape)
        )

    for imputation in d.imputations:
        print(f"DiffROAR of a random ranking (the control, {imputation})", flush=True)
        curves[curve_name("random", imputation)] = roar(
            train,
            test,
            draw(train["image"].shape, 0),
            draw(test["image"].shape, 1),
            key=purpose_key(config.seed, Purpose.ROAR_RETRAIN, len(config.train.models)),
            seeds=d.control_runs,
            imputation=imputation,
            record=workdir / "roar" / f"{curve_name('random', imputation)}.json",
            **roar_options,
        )
    out = {
        "models": models,
        "diff_roar": curves,
        "fill_value": fill,
        "seconds": time.perf_counter() - t0,
    }
    reports.diff_roar.write(workdir, config, out)
    return out


def plan(config, dry: DryRun) -> None:
    """The run's programs for ``--dry_run``: trainings, measurements, DiffROAR's retrainings.

    Every model's training, its PGD evaluations and attributions, then one retraining's
    programs times the retrainings (2 masks x fractions x runs per model, and the control).
    """
    mesh = make_mesh(config.num_devices)
    model = make_model(config.model, config.data.num_classes)
    lf = linen_logit_fn(model)
    e, d = config.evaluation, config.evaluation.diff_roar
    n_train, shape = source_shape(config.data.source, "train")
    n_test, _ = source_shape(config.data.source, "test")
    chunk = e.attribution_chunk
    x, y = abstract_images(chunk, shape)
    retrain_section = override(config.train, epochs=d.epochs)
    retrainings = (
        2
        * len(d.fractions)
        * (sum(s["runs"] for s in config.train.models) + d.control_runs)
        * len(d.imputations)
    )
    variables = None
    for spec in config.train.models:
        # PGD's ascent loop unrolled for the FLOP count (XLA counts a loop body once).
        variables = plan_training(
            dry,
            spec["name"],
            model,
            model_loss(model, spec),
            config.data,
            config.train,
            mesh,
            unlooped_loss_fn=None if spec["pgd"] is None else model_loss(model, spec, unroll=True),
        )
    for attack in e.attacks:
        n = min(e.attack_images, n_test)
        dry.add(
            f"PGD evaluation {attack['norm']} {attack['epsilon']:.4g} ({chunk} images)",
            _robust_correct,
            lf,
            variables,
            x,
            y,
            abstract_key(),
            attack["epsilon"],
            attack["step_size"],
            norm=attack["norm"],
            steps=attack["steps"],
            calls=len(config.train.models) * -(-n // chunk),
            unlooped={"unroll": True},
        )
    dry.add(
        f"attribution |gradient| ({chunk} images)",
        _gradient_of_predicted,
        lf,
        variables,
        x,
        calls=len(config.train.models) * (-(-n_train // chunk) + -(-n_test // chunk)),
    )
    # The masking of both splits (the coordinates of a whole split sorted on one device):
    # once per mask of each model (its attributions are fixed), per mask and run for the
    # control (redrawn every run).
    maskings = 2 * len(d.fractions) * (len(config.train.models) + d.control_runs)
    for split, n in (("train", n_train), ("test", n_test)):
        xs, _ = abstract_images(n, shape)
        if "constant" in d.imputations:
            dry.add(
                f"DiffROAR masking ({split} split, {n} images)",
                keep_ranked,
                xs,
                xs,
                jax.ShapeDtypeStruct((), jnp.float32),
                count=int(np.prod(shape)) // 2,  # the cost does not depend on the count
                order="most",
                unit=d.unit,
                calls=maskings,
            )
        if "road" in d.imputations:
            # ROAD's imputation, 4,096 images a call; its conjugate-gradient loop is counted
            # once by XLA's cost analysis (it runs up to H * W iterations).
            xc, _ = abstract_images(min(n, 4096), shape)
            dry.add(
                f"DiffROAR ROAD imputation ({split} split, {min(n, 4096)} images)",
                keep_ranked,
                xc,
                xc,
                jax.ShapeDtypeStruct((), jnp.float32),
                abstract_key(),
                jax.ShapeDtypeStruct((), jnp.float32),
                count=int(np.prod(shape)) // 2,
                order="most",
                unit=d.unit,
                imputation="road",
                calls=maskings * -(-n // 4096),
            )
    # One retraining's programs, times the number of retrainings.
    plan_training(
        dry,
        "DiffROAR retraining",
        model,
        classifier_loss(model),
        config.data,
        retrain_section,
        mesh,
        repeats=retrainings,
    )


if __name__ == "__main__":
    launch(run, "diff_roar", "DiffROAR config.", plan)
