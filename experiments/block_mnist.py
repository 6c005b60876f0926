"""Standard vs PGD-trained models on BlockMNIST (Shah, Jain & Netrapalli 2021).

Accuracy and the localisation of input-gradients on BlockMNIST and BlockMNIST-Top, and
DiffROAR curves with a random control.

Writes ``config.json``, ``results.json``, ``diff_roar.csv``, ``gradients.png``,
``diff_roar.png`` and ``report.md`` into ``--workdir``.

  python -m experiments.block_mnist --config=experiments/configs/block_mnist.py \
      --workdir=runs/block_mnist
"""

from __future__ import annotations

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
    retrainer,
    train_model,
)
from jaxgrad.attribution import gradient
from jaxgrad.data import eval_batches, make_block_mnist, signal_mask
from jaxgrad.drivers import attribute_dataset, mean_ci99, roar
from jaxgrad.evaluation import block_localization
from jaxgrad.models import linen_logit_fn
from jaxgrad.training import adversarial_classifier_loss, classifier_loss, pgd_attack


def train(config, arch, data, test, robust: bool, key, mesh) -> tuple[dict, float, float]:
    """Trains one model (standard or PGD); returns variables, clean and PGD test accuracy.

    The PGD accuracy uses the training ball with a stronger attack: ``attack_steps`` steps of
    ``2.5 epsilon / steps`` from a random start, on the first ``num_images`` test images.
    """
    model = make_model(config.model[arch], config.data.num_classes)
    pgd = dict(config.train.pgd)
    loss = adversarial_classifier_loss(model, **pgd) if robust else classifier_loss(model)
    section = override(config.train, **config.train.per_model.get(arch, {}))
    trained = train_model(model, loss, data, section, key=key, test=test, mesh=mesh)
    variables, lf = trained.variables, trained.logit_fn
    e = config.evaluation
    attack = dict(pgd, steps=e.attack_steps)
    attack["step_size"] = 2.5 * pgd["epsilon"] / e.attack_steps
    n = e.num_images
    x, y = jnp.asarray(test["image"][:n]), jnp.asarray(test["label"][:n])
    attack_key = purpose_key(config.seed, Purpose.PGD_EVAL)
    adv = jax.jit(lambda v, xx, yy: pgd_attack(lf, v, xx, yy, key=attack_key, **attack))(
        variables, x, y
    )
    robust_acc = float(jnp.mean(jnp.argmax(lf(variables, adv), -1) == y))
    return variables, trained.test_metrics["accuracy"], robust_acc


def gradients_of_predicted(model, variables, data) -> np.ndarray:
    """Input-gradients of the predicted class's logit over a whole split (Shah et al.)."""
    return attribute_dataset(
        gradient,
        linen_logit_fn(model),
        variables,
        eval_batches(data, 500),
        target_from="predicted",
        progress=False,
    ).attribution


def run(config, workdir: str | Path) -> dict:
    """Runs the experiment into ``workdir``."""
    t0 = time.perf_counter()
    workdir = report.workdir_path(workdir)
    report.write_config(workdir, config)
    mesh = make_mesh(config.num_devices)
    base_train, base_test = load_splits(config.data)
    block = (
        make_block_mnist(base_train, seed=config.seed),
        make_block_mnist(base_test, seed=config.seed + 1),
    )
    c = config.evaluation.diff_roar
    out, gradients = {}, None
    if not c.only_controls:
        out["models"] = {arch: _model_summary(config, arch) for arch in config.model}
        out["results"], trained, gradients = localisation(config, base_train, base_test, mesh)
    if c.enabled:
        out["diff_roar"] = {}
        if not c.only_controls:
            out["diff_roar"] = gradient_curves(config, block, trained, mesh)
        out["diff_roar"].update(random_controls(config, block, (base_train, base_test), mesh))
    out["seconds"] = time.perf_counter() - t0
    reports.block_mnist.write(workdir, config, out, images=block[1]["image"], gradients=gradients)
    return out


def _model_summary(config, arch) -> dict:
    """The model section of ``arch`` with its training epochs and PGD settings."""
    epochs = override(config.train, **config.train.per_model.get(arch, {})).epochs
    return {**config.model[arch].to_dict(), "epochs": epochs, "pgd": config.train.pgd.to_dict()}


def localisation(config, base_train, base_test, mesh):
    """Trains every model on BlockMNIST and BlockMNIST-Top; accuracy and localisation rows.

    Returns the rows, the trained variables by ``(variant, arch, kind)`` and the measured
    input-gradients of the models trained on BlockMNIST by ``(arch, kind)``.
    """
    results, gradients, trained = {}, {}, {}
    e = config.evaluation
    for v, (variant, top) in enumerate((("BlockMNIST", False), ("BlockMNIST-Top", True))):
        tr = make_block_mnist(base_train, seed=config.seed, top=top)
        te = make_block_mnist(base_test, seed=config.seed + 1, top=top)
        n = e.num_images
        x, y = jnp.asarray(te["image"][:n]), jnp.asarray(te["label"][:n])
        mask = signal_mask(te["signal_top"][:n], te["image"].shape[1:])
        for a, arch in enumerate(config.model):
            for k, kind in enumerate(("standard", "pgd")):
                print(f"{variant}: training the {kind} {arch}", flush=True)
                key = purpose_key(config.seed, Purpose.MODEL, v, a, k)  # one per model
                variables, clean, robust_acc = train(config, arch, tr, te, kind == "pgd", key, mesh)
                trained[variant, arch, kind] = variables
                model = make_model(config.model[arch], config.data.num_classes)
                g = gradient(linen_logit_fn(model), variables, x, y)
                loc = block_localization(g, mask, top_k=e.top_k)
                row = {"clean_accuracy": clean, "pgd_accuracy": robust_acc}
                for name, values in loc.items():
                    mean, lo, hi = mean_ci99(np.asarray(values))
                    row[name] = {"mean": mean, "ci99_low": lo, "ci99_high": hi}
                results[f"{variant}/{arch}/{kind}"] = row
                if variant == "BlockMNIST":
                    gradients[arch, kind] = np.asarray(g)
                print(json.dumps(row), flush=True)
    return results, trained, gradients


def _retrainer(config, mesh):
    """Retrains a fresh model of ``diff_roar.model`` for ``diff_roar.epochs`` (ROAR)."""
    c = config.evaluation.diff_roar
    model = make_model(config.model[c.model], config.data.num_classes)
    return retrainer(model, override(config.train, epochs=c.epochs), mesh=mesh)


def gradient_curves(config, block, trained, mesh) -> dict:
    """DiffROAR of the standard and the robust model's gradients on BlockMNIST."""
    c = config.evaluation.diff_roar
    model = make_model(config.model[c.model], config.data.num_classes)
    curves = {}
    for label, kind in (("standard", "standard"), ("robust", "pgd")):
        variables = trained["BlockMNIST", c.model, kind]
        a_train, a_test = (gradients_of_predicted(model, variables, split) for split in block)
        print(f"DiffROAR on BlockMNIST: {label} gradient", flush=True)
        curves[f"BlockMNIST/{label} gradient"] = roar(
            *block,
            a_train,
            a_test,
            retrain=_retrainer(config, mesh),
            key=purpose_key(config.seed, Purpose.ROAR_RETRAIN),
            fractions=c.fractions,
            seeds=c.seeds,
        )
    return curves


def random_controls(config, block, mnist, mesh) -> dict:
    """DiffROAR of a uniform random attribution on BlockMNIST and on MNIST.

    The attribution is redrawn for every seed (and split), so the spread over seeds includes
    the randomness of the masks, and the mean estimates the expected DiffROAR, 0.
    """
    c = config.evaluation.diff_roar
    curves = {}

    def draw(shape, *index):
        key = purpose_key(config.seed, Purpose.CONTROL, *index)
        return lambda s: np.asarray(jax.random.uniform(jax.random.fold_in(key, s), shape))

    for t, (name, splits) in enumerate((("BlockMNIST", block), ("MNIST", mnist))):
        print(f"DiffROAR on {name}: random (the control)", flush=True)
        curves[f"{name}/random"] = roar(
            *splits,
            draw(splits[0]["image"].shape, t, 0),
            draw(splits[1]["image"].shape, t, 1),
            retrain=_retrainer(config, mesh),
            key=purpose_key(config.seed, Purpose.ROAR_RETRAIN),
            fractions=c.fractions,
            seeds=c.control_seeds,
        )
    return curves


if __name__ == "__main__":
    launch(run, "block_mnist", "BlockMNIST config.")
