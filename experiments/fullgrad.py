"""FullGrad's evaluations: pixel perturbation and ROAR, FullGrad against the other methods.

Trains the config's CNN (with BatchNorm), attributes every training and test image with each
method of ``evaluation.methods`` (the predicted class), then

- pixel perturbation: removes the k% least salient pixels of the first test images (each fill
  of ``evaluation.perturbation.fills``) and measures the absolute fractional change of the
  predicted logit, with a random ranking as the control;
- ROAR: removes the k% most salient pixels of both splits (the training set's mean as fill),
  retrains a fresh model per mask and seed, and measures its test accuracy, with a random
  ranking (redrawn per seed) and an unmasked retraining as references.

Writes ``config.json``, ``results.json``, ``perturbation.csv``, ``roar.csv``,
``perturbation.png``, ``roar.png``, ``maps.png`` and ``report.md`` into ``--workdir``; the
model's checkpoints and metrics go to ``checkpoints/`` and ``metrics.jsonl``, the finished
retrainings to ``roar/<method>.json`` (a rerun resumes both).

  python -m experiments.fullgrad --config=experiments/configs/fullgrad.py:cifar100 \
      --workdir=gs://BUCKET/fullgrad_cifar100
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
    train_classifier,
)
from experiments.dry_run import DryRun, abstract_images, abstract_key, integrated_gradients_program
from jaxgrad.attribution import (
    fullgrad,
    gradcam,
    gradient,
    gradient_x_input,
    integrated_gradients,
    smoothgrad,
)
from jaxgrad.data import eval_batches, source_shape
from jaxgrad.drivers import attribute_dataset, keep_ranked, roar
from jaxgrad.evaluation import pixel_perturbation
from jaxgrad.models import init_variables, linen_logit_fn, tap_shapes
from jaxgrad.training import classifier_loss

RANDOM = "random"
STOCHASTIC = ("smoothgrad",)  # the methods that take a key


def attribution_methods(e) -> dict:
    """The compared methods of an ``evaluation`` section, by name, with their settings bound."""
    available = {
        "fullgrad": fullgrad,
        "gradient": gradient,
        "gradient_x_input": gradient_x_input,
        "integrated_gradients": functools.partial(
            integrated_gradients, steps=e.ig_steps, chunk_size=e.ig_chunk_size
        ),
        "smoothgrad": functools.partial(
            smoothgrad,
            num_samples=e.smoothgrad_samples,
            noise_level=e.smoothgrad_noise,
            chunk_size=e.smoothgrad_chunk_size or None,
        ),
        "gradcam": functools.partial(gradcam, layer=e.gradcam_layer),
    }
    unknown = [m for m in e.methods if m not in available]
    if unknown:
        raise ValueError(
            f"evaluation.methods: unknown {unknown}; use any of {sorted(available)} "
            f"(the random ranking is always added)"
        )
    return {m: available[m] for m in e.methods}


def check_evaluation(config, sample: np.ndarray) -> None:
    """Refuses an ``evaluation`` section the run would fail on late, naming the key.

    The method names, ``ties``, and Grad-CAM's ``gradcam_layer`` (a spatial tap of the
    model, found abstractly: nothing is trained or run).
    """
    e = config.evaluation
    attribution_methods(e)
    if e.ties not in ("stable", "random"):
        raise ValueError(f"evaluation.ties must be 'stable' or 'random', got {e.ties!r}")
    if "gradcam" in e.methods:
        model = make_model(config.model, config.data.num_classes)
        variables = jax.eval_shape(
            lambda x: init_variables(model, jax.random.key(0), x), jnp.asarray(sample)
        )
        shapes = tap_shapes(linen_logit_fn(model), variables, jnp.asarray(sample))
        spatial = sorted(k for k, v in shapes.items() if len(v) == 4)
        if e.gradcam_layer not in spatial:
            raise ValueError(
                f"evaluation.gradcam_layer {e.gradcam_layer!r} is not a spatial tap of the "
                f"model; available: {spatial}"
            )


def salience(attribution: np.ndarray) -> np.ndarray:
    """``sum_c abs(a)``, ``[N, H, W, 1]`` float32: how every method's pixels are ranked."""
    return np.sum(np.abs(attribution), axis=-1, keepdims=True, dtype=np.float32)


def attribute_splits(config, trained, variables, splits, mesh) -> dict[str, list[np.ndarray]]:
    """Each method's per-pixel salience ``[N, H, W, 1]`` of every split, the predicted class."""
    e = config.evaluation
    out = {}
    for m, (name, method) in enumerate(attribution_methods(e).items()):
        out[name] = []
        for s, data in enumerate(splits):
            print(f"{name}: attributing {len(data['label'])} images", flush=True)
            key = purpose_key(config.seed, Purpose.ATTRIBUTION_NOISE, m, s)
            r = attribute_dataset(
                method,
                trained.logit_fn,
                variables,
                eval_batches(data, e.attribution_batch),
                mesh=mesh,
                key=key if name in STOCHASTIC else None,
                target_from="predicted",
                num_batches=-(-len(data["label"]) // e.attribution_batch),
            )
            out[name].append(salience(r.attribution))
    return out


def random_salience(key: jax.Array, split: int, shape: tuple[int, ...]):
    """``seed -> [N, H, W, C]``: a uniform per-pixel salience, redrawn per seed and split.

    With several processes each host folds in its index: its shard holds other images.
    """

    def draw(seed: int) -> np.ndarray:
        k = jax.random.fold_in(jax.random.fold_in(key, split), seed)
        k = jax.random.fold_in(k, jax.process_index())
        return np.broadcast_to(np.asarray(jax.random.uniform(k, (*shape[:-1], 1))), shape)

    return draw


@functools.partial(jax.jit, static_argnums=0, static_argnames=("fractions", "order", "ties"))
def _perturb(lf, variables, x, sal, fill, key, *, fractions, order, ties="stable"):
    """Fractional change of the predicted logit ``[F, B]`` and the prediction kept ``[F, B]``."""
    target = jnp.argmax(lf(variables, x), axis=-1)
    r = pixel_perturbation(
        lf,
        variables,
        x,
        target,
        jnp.broadcast_to(sal, x.shape),
        fractions=fractions,
        order=order,
        fill="constant",
        fill_value=fill,
        key=key,
        ties=ties,
    )
    return r["fractional_change"], r["correct"]


def perturbation(config, lf, variables, test, sal: dict) -> dict:
    """Pixel perturbation of every method and the random ranking, per fill: mean, SE, median."""
    p = config.evaluation.perturbation
    n = min(p.num_images, len(test["label"]))
    fractions = tuple(float(f) for f in p.fractions)
    out = {}
    for fill in p.fills:
        rows = {}
        for name in [*sal, RANDOM]:
            change, kept = [], []
            for i in range(0, n, p.batch):
                x = jnp.asarray(test["image"][i : min(i + p.batch, n)])
                s = (
                    jnp.zeros(x.shape[:-1] + (1,))
                    if name == RANDOM
                    else sal[name][1][i : i + len(x)]
                )
                key = jax.random.fold_in(purpose_key(config.seed, Purpose.PERTURBATION_ORDER), i)
                c, k = _perturb(
                    lf,
                    variables,
                    x,
                    jnp.asarray(s),
                    jnp.float32(fill),
                    key,
                    fractions=fractions,
                    order=RANDOM if name == RANDOM else "least",
                    ties=config.evaluation.ties,
                )
                change.append(np.asarray(c))
                kept.append(np.asarray(k))
            change, kept = np.concatenate(change, 1), np.concatenate(kept, 1)
            rows[name] = {
                "fractional_change": change.mean(1).tolist(),
                "fractional_change_se": (change.std(1, ddof=1) / np.sqrt(n)).tolist(),
                "fractional_change_median": np.median(change, 1).tolist(),
                "unchanged_share": (change == 0).mean(1).tolist(),
                "prediction_kept": kept.mean(1).tolist(),
            }
        out[f"{fill:g}"] = rows
    return {"fractions": list(fractions), "num_images": n, "fills": out}


def unmasked_reference(retrain, train, test, key, seeds: int, folder) -> list[float]:
    """The retrained accuracy on the unmasked splits per seed, kept in ``unmasked.json``.

    Seed ``s`` retrains with ``fold_in(key, s)``, as ``roar`` does for every mask; a rerun
    reads the seeds already done (the file is tied to the split sizes and the seed count).
    """
    path = folder / "unmasked.json"
    tag = [len(train["label"]), len(test["label"]), seeds]
    done = json.loads(path.read_text()) if path.exists() else {}
    accuracy = done.get("accuracy", []) if done.get("tag") == tag else []
    for s in range(len(accuracy), seeds):
        accuracy.append(float(retrain(train, test, jax.random.fold_in(key, s))))
        if jax.process_index() == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"tag": tag, "accuracy": accuracy}))
    return accuracy


def run(config, workdir: str | Path) -> dict:
    """Runs the experiment into ``workdir``; returns the results."""
    t0 = time.perf_counter()
    workdir = report.workdir_path(workdir)
    report.write_config(workdir, config)
    train, test = load_splits(config.data)
    e = config.evaluation
    check_evaluation(config, train["image"][:1])  # before any training
    mesh = make_mesh(config.num_devices)
    trained = train_classifier(config, train, test, workdir)
    variables = jax.device_get(trained.variables)
    lf = trained.logit_fn
    sal = attribute_splits(config, trained, variables, (train, test), mesh)
    print("pixel perturbation", flush=True)
    pert = perturbation(config, lf, variables, test, sal)

    r = e.roar
    fill = global_mean(train["image"])  # the training set's mean
    model = make_model(config.model, config.data.num_classes)
    retrain = retrainer(model, override(config.train, **dict(r.train)), mesh=mesh)
    options = dict(retrain=retrain, fractions=tuple(r.fractions), protocol="roar")
    options.update(fill_value=fill, seeds=r.seeds, ties=e.ties)
    # Every retraining of seed s, masked or not, uses fold_in(key, s) (as roar does): the
    # masks are the only difference between methods and from the unmasked reference.
    key = purpose_key(config.seed, Purpose.ROAR_RETRAIN)
    reference = unmasked_reference(retrain, train, test, key, r.seeds, workdir / "roar")
    curves = {}
    for name in [*sal, RANDOM]:
        print(f"ROAR of {name}", flush=True)
        if name == RANDOM:
            control = purpose_key(config.seed, Purpose.CONTROL)
            a_train = random_salience(control, 0, train["image"].shape)
            a_test = random_salience(control, 1, test["image"].shape)
        else:
            a_train = np.broadcast_to(sal[name][0], train["image"].shape)
            a_test = np.broadcast_to(sal[name][1], test["image"].shape)
        curves[name] = roar(
            train,
            test,
            a_train,
            a_test,
            key=key,
            record=workdir / "roar" / f"{name}.json",
            **options,
        )
    out = {
        "test_accuracy": trained.test_metrics["accuracy"],
        "perturbation": pert,
        "roar": {
            "fractions": [float(f) for f in r.fractions],
            "fill_value": fill,
            "reference_accuracy": reference,
            "curves": {
                k: {
                    "accuracy": np.asarray(v["accuracy"]).tolist(),
                    "accuracy_per_seed": np.asarray(v["accuracy_per_seed"]).tolist(),
                }
                for k, v in curves.items()
            },
        },
        "seconds": time.perf_counter() - t0,
    }
    n = min(6, len(test["label"]))
    maps = [sal[name][1][:n] for name in sal]
    reports.fullgrad.write(workdir, config, out, images=test["image"][:n], maps=maps)
    return out


def plan(config, dry: DryRun) -> None:
    """The run's programs for ``--dry_run``: training, attributions, perturbation, ROAR.

    The model's training, each method's attribution of both splits, the pixel perturbation
    of each method and fill, the masking of both splits per mask and the retrainings
    (``(methods + random) x fractions x seeds`` plus the unmasked references).
    """
    mesh = make_mesh(config.num_devices)
    model = make_model(config.model, config.data.num_classes)
    lf = linen_logit_fn(model)
    e, r, p = config.evaluation, config.evaluation.roar, config.evaluation.perturbation
    n_train, shape = source_shape(config.data.source, "train")
    check_evaluation(config, np.zeros((1, *shape), np.float32))
    n_test, _ = source_shape(config.data.source, "test")
    variables = plan_training(
        dry, "model", model, classifier_loss(model), config.data, config.train, mesh
    )
    x, y = abstract_images(e.attribution_batch, shape)
    calls = -(-n_train // e.attribution_batch) + -(-n_test // e.attribution_batch)
    ig_fn = integrated_gradients_program(lf)
    sg_fn = jax.jit(
        lambda v, xx, tt, k, chunk_size: smoothgrad(
            lf,
            v,
            xx,
            tt,
            key=k,
            num_samples=e.smoothgrad_samples,
            noise_level=e.smoothgrad_noise,
            chunk_size=chunk_size,
        ),
        static_argnames=("chunk_size",),
    )
    for name, method in attribution_methods(e).items():
        if name == "integrated_gradients":  # looped: its FLOPs from an unlooped compilation
            options = dict(steps=e.ig_steps, chunk_size=e.ig_chunk_size)
            fn, unlooped = ig_fn, {"chunk_size": None}
        elif name == "smoothgrad" and e.smoothgrad_chunk_size:
            options = dict(chunk_size=e.smoothgrad_chunk_size)
            fn, unlooped = sg_fn, {"chunk_size": None}
        else:
            fn = jax.jit(lambda v, xx, tt, k, _m=method: _m(lf, v, xx, tt, key=k))
            options, unlooped = {}, None
        dry.add(
            f"attribution {name} ({e.attribution_batch} images)",
            fn,
            variables,
            x,
            y,
            abstract_key(),
            calls=calls,
            unlooped=unlooped,
            **options,
        )
    n = min(p.num_images, n_test)
    xp, _ = abstract_images(min(p.batch, n), shape)
    salp, _ = abstract_images(min(p.batch, n), shape[:-1] + (1,))
    dry.add(
        f"pixel perturbation ({min(p.batch, n)} images, {len(p.fractions)} fractions)",
        _perturb,
        lf,
        variables,
        xp,
        salp,
        jax.ShapeDtypeStruct((), jnp.float32),
        abstract_key(),
        fractions=tuple(float(f) for f in p.fractions),
        order="least",
        calls=len(p.fills) * (len(e.methods) + 1) * -(-n // p.batch),
        ties=e.ties,
        note="the random control's program (order='random') costs the same",
    )
    masks = (len(e.methods) + 1) * len(r.fractions)
    for split, count in (("train", n_train), ("test", n_test)):
        xs, _ = abstract_images(count, shape)
        dry.add(
            f"ROAR masking ({split} split, {count} images)",
            keep_ranked,
            xs,
            xs,
            jax.ShapeDtypeStruct((), jnp.float32),
            count=int(np.prod(shape[:2])) // 2,  # the cost does not depend on the count
            order="least",
            # once per fraction for each method's fixed maps; per seed for the random control
            calls=len(e.methods) * len(r.fractions) + r.seeds * len(r.fractions),
        )
    plan_training(
        dry,
        "ROAR retraining",
        model,
        classifier_loss(model),
        config.data,
        override(config.train, **dict(r.train)),
        mesh,
        repeats=(masks + 1) * r.seeds,
    )


if __name__ == "__main__":
    launch(run, "fullgrad", "FullGrad evaluation config.", plan)
