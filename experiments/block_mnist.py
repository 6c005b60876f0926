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

from experiments import report
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


def describe(spec) -> str:
    """A short name of the architecture, for the report."""
    if spec.name == "mlp":
        return f"MLP {tuple(spec.hidden)}"
    return f"CNN conv5x5x{spec.features[0]}, conv5x5x{spec.features[1]}, dense {spec.dense}"


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
    workdir = Path(workdir).absolute()
    report.write_config(workdir, config)
    mesh = make_mesh(config.num_devices)
    base_train, base_test = load_splits(config.data)
    block = (
        make_block_mnist(base_train, seed=config.seed),
        make_block_mnist(base_test, seed=config.seed + 1),
    )
    c = config.evaluation.diff_roar
    out = {}
    if not c.only_controls:
        out["models"] = {arch: _model_summary(config, arch) for arch in config.model}
        out["results"], trained, maps, titles = localisation(config, base_train, base_test, mesh)
    if c.enabled:
        out["diff_roar"] = {}
        if not c.only_controls:
            out["diff_roar"] = gradient_curves(config, block, trained, mesh)
        out["diff_roar"].update(random_controls(config, block, (base_train, base_test), mesh))
    out["seconds"] = time.perf_counter() - t0
    report.write_json(workdir / "results.json", out)
    if "results" in out:
        report.attribution_figure(
            workdir / "gradients.png",
            block[1]["image"][:8],
            maps,
            row_titles=titles,
            title="Input-gradients (label's logit) on BlockMNIST",
        )
    if "diff_roar" in out:
        _write_diff_roar(workdir, out["diff_roar"])
    _report(workdir, config, out)
    return out


def _model_summary(config, arch) -> dict:
    """The model section of ``arch`` with its training epochs and PGD settings."""
    epochs = override(config.train, **config.train.per_model.get(arch, {})).epochs
    return {**config.model[arch].to_dict(), "epochs": epochs, "pgd": config.train.pgd.to_dict()}


def localisation(config, base_train, base_test, mesh):
    """Trains every model on BlockMNIST and BlockMNIST-Top; accuracy and localisation rows."""
    results, maps, titles, trained = {}, [], [], {}
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
                    maps.append(np.asarray(g[:8]))
                    titles.append(f"{arch} {kind}")
                print(json.dumps(row), flush=True)
    return results, trained, maps, titles


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


def _write_diff_roar(workdir: Path, curves: dict) -> None:
    report.write_csv(
        workdir / "diff_roar.csv",
        [
            "data/attribution",
            "k",
            "top_k_accuracy",
            "bottom_k_accuracy",
            "diff_roar",
            "diff_roar_se",
            "diff_roar_pair_std",
            "seeds",
        ],
        [
            [
                name,
                k,
                r["top_k_accuracy"][i],
                r["bottom_k_accuracy"][i],
                r["diff_roar"][i],
                r["diff_roar_se"][i],
                r["diff_roar_pair_std"][i],
                len(r["top_k_accuracy_per_seed"]),
            ]
            for name, r in curves.items()
            for i, k in enumerate(r["fractions"])
        ],
    )
    panel = report.Panel(
        [
            report.Curve(r["fractions"], r["diff_roar"], name, yerr=r["diff_roar_pair_std"])
            for name, r in curves.items()
        ],
        title="DiffROAR, retrained models (error bars: std over seed pairs)",
        xlabel="k (fraction of pixels kept)",
        ylabel="DiffROAR = acc(top-k kept) - acc(bottom-k kept)",
        hline=0.0,
        legend_size=8,
    )
    report.curves(workdir / "diff_roar.png", [panel], panel_size=(6, 4))


def _report(workdir, config, out):
    blocks = [
        report.title("BlockMNIST: standard vs PGD-trained models"),
        report.paragraph(
            f"Data: `{config.data.source}` turned into BlockMNIST (our construction; signal "
            "block at the top or bottom at random per example, a fixed hollow square in the "
            "other) and BlockMNIST-Top (signal always on top). Adam, learning rate "
            f"{config.train.learning_rate}, batch {config.train.batch_size}. "
            f"{out['seconds']:.0f} s."
        ),
    ]
    if "results" in out:
        blocks += _localisation_blocks(config, out)
    if "diff_roar" in out:
        blocks += _diff_roar_blocks(config, out)
    report.write_report(workdir, blocks)


def _localisation_blocks(config, out):
    e, p = config.evaluation, config.train.pgd
    return [
        report.bullets(
            *(
                f"`{arch}`: {describe(config.model[arch])}, {out['models'][arch]['epochs']} "
                f"epochs; PGD training: {p.norm}, epsilon {p.epsilon}, {p.steps} steps of "
                f"{p.step_size}, random start."
                for arch in config.model
            )
        ),
        report.paragraph(
            f"PGD accuracy: the same ball, {e.attack_steps} steps of 2.5 epsilon / "
            f"{e.attack_steps}, random start, first {e.num_images} test images. "
            f"Localisation: gradients of the label's logit on {e.num_images} test images, "
            "means with 99% intervals over images."
        ),
        report.paragraph(
            "Shah et al.'s claim: robust gradients sit on the signal block; standard ones leak "
            "onto the null block unless the signal is always on top."
        ),
        report.table(
            [
                "data / model / training",
                "clean acc.",
                "PGD acc.",
                "signal share of abs",
                "signal share of positive",
                f"top {e.top_k:.0%} in null block",
            ],
            [
                [
                    name,
                    f"{r['clean_accuracy']:.4f}",
                    f"{r['pgd_accuracy']:.4f}",
                    *(
                        report.fmt_interval(r[m])
                        for m in ("signal_mass_abs", "signal_mass_pos", "top_k_in_null")
                    ),
                ]
                for name, r in out["results"].items()
            ],
        ),
        report.image("gradients.png", "gradients"),
    ]


def _diff_roar_blocks(config, out):
    c = config.evaluation.diff_roar
    return [
        report.heading("DiffROAR"),
        report.paragraph(
            f"Attributions: |input-gradient| of the predicted class's logit of the `{c.model}` "
            "models trained on BlockMNIST, or uniform noise redrawn for every seed (the "
            f"controls); each mask retrains a fresh `{c.model}` for {c.epochs} epochs on the "
            "masked training split and measures it on the masked test split; removed pixels "
            f"are 0. Seeds per mask: {c.seeds} for the gradients, {c.control_seeds} for the "
            "controls. +- is the standard error over seeds, [the std over seed pairs] Shah et "
            "al.'s error bar."
        ),
        report.table(
            ["data / attribution", *(f"k={k}" for k in c.fractions)],
            [
                [
                    name,
                    *(
                        f"{d:+.3f} +- {se:.3f} [{sd:.3f}]"
                        for d, se, sd in zip(
                            r["diff_roar"], r["diff_roar_se"], r["diff_roar_pair_std"], strict=True
                        )
                    ),
                ]
                for name, r in out["diff_roar"].items()
            ],
        ),
        report.image("diff_roar.png", "DiffROAR"),
    ]


if __name__ == "__main__":
    launch(run, "block_mnist", "BlockMNIST config.")
