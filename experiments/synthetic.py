"""Shah et al.'s synthetic check: standard vs L-inf PGD MLPs, where their input-gradients point.

Writes ``results.json`` and ``report.md`` into ``--workdir``
(``experiments/configs/synthetic.py``).

  python -m experiments.synthetic --workdir=runs/synthetic
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
    make_mesh,
    make_model,
    override,
    purpose_key,
    retrainer,
    train_model,
)
from jaxgrad.data import make_signal_coordinate
from jaxgrad.drivers import roar
from jaxgrad.training import adversarial_classifier_loss, classifier_loss, cross_entropy

# The notebook's stored results (harshays/inputgradients, 02_fig_in_synthetic_data.ipynb).
PAPER = {
    "standard": dict(argmin_is_signal=0.562, argmax_is_signal=0.041, aq=-0.521, abs_cos=0.29),
    "robust": dict(argmin_is_signal=0.0, argmax_is_signal=1.0, aq=1.0, abs_cos=1.0),
}


def loss_gradients(logit_fn, variables, data, chunk: int = 1000) -> np.ndarray:
    """``d/dx sum_b CE(f(x_b), y_b)`` (the authors' attribution), over a whole split."""
    grad = jax.jit(jax.grad(lambda x, y: jnp.sum(cross_entropy(logit_fn(variables, x), y))))
    x, y = data["image"], data["label"]
    return np.concatenate(
        [
            np.asarray(grad(jnp.asarray(x[i : i + chunk]), jnp.asarray(y[i : i + chunk])))
            for i in range(0, len(y), chunk)
        ]
    )


def measure(g: np.ndarray, data: dict) -> dict:
    """The table's three attribution-only quantities on a split."""
    a = np.abs(g.reshape(len(g), -1))
    x = data["image"].reshape(len(g), -1)
    cos = np.sum(x * g.reshape(len(g), -1), 1) / (
        np.linalg.norm(x, axis=1) * np.linalg.norm(g.reshape(len(g), -1), axis=1) + 1e-12
    )
    return {
        "argmin_is_signal": float(np.mean(np.argmin(a, 1) == data["signal"])),
        "argmax_is_signal": float(np.mean(np.argmax(a, 1) == data["signal"])),
        "abs_cos": float(np.mean(np.abs(cos))),
    }


def run(config, workdir: str | Path) -> dict:
    """Trains both models, measures the four quantities; returns them."""
    t0 = time.perf_counter()
    workdir = report.workdir_path(workdir)
    report.write_config(workdir, config)
    d = config.data
    train = make_signal_coordinate(d.num_train, dim=d.dim, bias_prob=d.bias_prob, seed=config.seed)
    test = make_signal_coordinate(
        d.num_test, dim=d.dim, bias_prob=d.bias_prob, seed=config.seed + 1
    )
    mesh = make_mesh(config.num_devices)
    model = make_model(config.model, d.num_classes)
    pgd = dict(config.train.pgd)
    pgd["clip"] = None if pgd["clip"] is None else tuple(pgd["clip"])
    section = config.train  # its pgd field is read above, ignored by the trainers
    retrain = retrainer(
        model, override(section, epochs=config.evaluation.retrain.epochs), mesh=mesh
    )
    out = {"models": {}}
    for i, kind in enumerate(("standard", "robust")):
        loss = (
            adversarial_classifier_loss(model, **pgd)
            if kind == "robust"
            else classifier_loss(model)
        )
        print(f"training the {kind} MLP", flush=True)
        trained = train_model(
            model,
            loss,
            {"image": train["image"], "label": train["label"]},
            section,
            key=purpose_key(config.seed, Purpose.MODEL, i),
            test={"image": test["image"], "label": test["label"]},
            mesh=mesh,
        )
        g_train = loss_gradients(trained.logit_fn, trained.variables, train)
        g_test = loss_gradients(trained.logit_fn, trained.variables, test)
        row = {"test_accuracy": trained.test_metrics["accuracy"], **measure(g_test, test)}
        # The notebook's AQ(A_G, 1): Pr[argmax = signal] - Pr[argmin = signal].
        row["aq"] = row["argmax_is_signal"] - row["argmin_is_signal"]
        curve = roar(
            {"image": train["image"], "label": train["label"]},
            {"image": test["image"], "label": test["label"]},
            g_train,
            g_test,
            retrain=retrain,
            key=purpose_key(config.seed, Purpose.ROAR_RETRAIN, i),
            fractions=(1.0 / d.dim,),  # one coordinate kept
            protocol="diff_roar",
            fill_value=0.0,
            unit="coordinate",
            seeds=config.evaluation.seeds,
        )
        row["top_1_kept_accuracy"] = float(curve["top_k_accuracy"][0])
        row["bottom_1_kept_accuracy"] = float(curve["bottom_k_accuracy"][0])
        row["diff_roar"] = float(curve["diff_roar"][0])
        row["diff_roar_se"] = float(curve["diff_roar_se"][0])  # NaN with one seed
        out["models"][kind] = row
        print(json.dumps({kind: row}), flush=True)
    out["paper"] = PAPER
    out["seconds"] = time.perf_counter() - t0
    reports.synthetic.write(workdir, config, out)
    return out


if __name__ == "__main__":
    launch(run, "synthetic", "Synthetic-data config.")
