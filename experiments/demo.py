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

from experiments import report, reports
from experiments.common import launch, load_splits, train_classifier
from jaxgrad import sharding as shd
from jaxgrad.gradients import input_gradients


def run(config, workdir: str | Path) -> dict:
    """Runs the demo with ``config`` into ``workdir`` and returns the results dict."""
    t_start = time.perf_counter()
    workdir = report.workdir_path(workdir)
    report.write_config(workdir, config)
    train, test = load_splits(config.data)
    trained = train_classifier(config, train, test, workdir)
    n = config.evaluation.num_images
    x, y = jnp.asarray(test["image"][:n]), jnp.asarray(test["label"][:n])
    pred = jnp.argmax(jax.jit(trained.logit_fn)(trained.variables, x), -1)
    grads = jax.jit(input_gradients, static_argnums=0)(trained.logit_fn, trained.variables, x, pred)
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
    reports.demo.write(
        workdir, config, results, images=x, labels=y, predictions=pred, gradients=grads
    )
    return results


if __name__ == "__main__":
    launch(run, "demo", "Demo config.")
