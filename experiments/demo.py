"""``make demo``: train a classifier, then show its signed input-gradients.

Trains the config's model on its data set (by default the sanity-check CNN on the offline
digits), evaluates it, keeps orbax checkpoints (a rerun with the same workdir resumes), and
writes into ``--workdir``: ``config.json``, ``metrics.jsonl``, ``results.json``,
``input_gradients.png`` (signed maps, red positive, blue negative) and ``report.md``.

  python -m experiments.demo --config=experiments/configs/demo.py --workdir=runs/demo
"""

from __future__ import annotations

import time
from pathlib import Path

import jax
import jax.numpy as jnp

from experiments import report
from experiments.common import (
    launch,
    load_splits,
    train_classifier,
)
from jaxgrad import sharding as shd
from jaxgrad.gradients import input_gradients


def run(config, workdir: str | Path) -> dict:
    """Runs the demo with ``config`` into ``workdir`` and returns the results dict."""
    t_start = time.perf_counter()
    workdir = Path(workdir).absolute()
    report.write_config(workdir, config)
    train, test = load_splits(config.data)
    trained = train_classifier(config, train, test, workdir)
    n = config.evaluation.num_images
    x, y = jnp.asarray(test["image"][:n]), jnp.asarray(test["label"][:n])
    pred = jnp.argmax(jax.jit(trained.logit_fn)(trained.variables, x), -1)
    grads = jax.jit(input_gradients, static_argnums=0)(trained.logit_fn, trained.variables, x, pred)
    figure = report.attribution_figure(
        workdir / "input_gradients.png",
        x,
        [grads],
        row_titles=["input-gradient"],
        column_titles=[f"y={int(a)} pred={int(b)}" for a, b in zip(y, pred, strict=True)],
        title="Signed input-gradients of the predicted logit",
    )
    result = trained.test_metrics
    results = {
        "test_accuracy": result["accuracy"],
        "test_loss": result["loss"],
        "num_test": int(result["count"]),
        "steps": int(shd.to_host(trained.state.step)),
        "batch_size": trained.batch_size,
        "devices": trained.mesh.devices.size,
        "seconds": time.perf_counter() - t_start,
    }
    report.write_json(workdir / "results.json", results, indent=2)
    _report(workdir, config, results, figure)
    return results


def _report(workdir: Path, config, results: dict, figure: Path) -> None:
    t = config.train
    report.write_report(
        workdir,
        [
            report.title("jaxgrad demo"),
            report.paragraph(
                f"Model `{config.model.name}` ({config.model.activation}) trained on "
                f"`{config.data.source}` for {results['steps']} steps of batch "
                f"{results['batch_size']} with {t.optimizer} (lr {t.learning_rate}) on "
                f"{results['devices']} device(s), in {results['seconds']:.1f} s including "
                "compilation."
            ),
            report.table(
                ["metric", "value"],
                [
                    ["test accuracy", f"{results['test_accuracy']:.4f}"],
                    ["test loss", f"{results['test_loss']:.4f}"],
                    ["test images", results["num_test"]],
                ],
            ),
            report.heading("Signed input-gradients"),
            report.image(figure, "input-gradients"),
            report.paragraph(
                "Each map is the gradient of the predicted class's logit with respect to the "
                "input, summed over channels, divided by the 99.5th percentile of its absolute "
                "value and clipped to [-1, 1]: red where increasing the pixel raises the logit, "
                "blue where it lowers it. The number under each map is the raw sum of the "
                "gradient."
            ),
            report.paragraph(
                "Files: `config.json`, `metrics.jsonl` (training and evaluation rows), "
                "`results.json`, `checkpoints/` (orbax; rerunning with the same workdir resumes "
                "from the newest)."
            ),
        ],
    )


if __name__ == "__main__":
    launch(run, "demo", "Demo config.")
