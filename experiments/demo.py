"""``make demo``: train a classifier, then show its signed input-gradients.

Trains the config's model on its data set (by default the sanity-check CNN on the offline
digits), evaluates it, keeps orbax checkpoints (a rerun with the same workdir resumes), and
writes into ``--workdir``: ``config.json``, ``metrics.jsonl``, ``results.json``,
``input_gradients.png`` (signed maps, red positive, blue negative) and ``report.md``.

  python -m experiments.demo --config=experiments/configs/demo.py --workdir=runs/demo
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from experiments.common import launch, load_splits, make_mesh, make_model, save_config, train_model
from jaxgrad import sharding as shd
from jaxgrad.gradients import input_gradients
from jaxgrad.training import classifier_loss
from jaxgrad.viz import attribution_grid


def run(config, workdir: str | Path) -> dict:
    """Runs the demo with ``config`` into ``workdir`` and returns the results dict."""
    t_start = time.perf_counter()
    workdir = Path(workdir).absolute()
    save_config(config, workdir)
    train, test = load_splits(config.data)
    model = make_model(config.model, config.data.num_classes)
    trained = train_model(
        model,
        classifier_loss(model),
        train,
        config.train,
        key=jax.random.key(config.seed),
        test=test,
        mesh=make_mesh(config.num_devices),
        checkpoint_dir=workdir / "checkpoints",
        metrics_path=workdir / "metrics.jsonl",
    )
    state, logit_fn, result = trained.state, trained.logit_fn, trained.test_metrics
    batch_size, n_dev = trained.batch_size, trained.mesh.devices.size

    n = config.evaluation.num_images
    x, y = jnp.asarray(test["image"][:n]), jnp.asarray(test["label"][:n])
    logits = jax.jit(logit_fn)(state.variables, x)
    pred = jnp.argmax(logits, -1)
    grads = jax.jit(input_gradients, static_argnums=0)(logit_fn, state.variables, x, pred)
    figure = attribution_grid(
        np.asarray(x),
        [np.asarray(grads)],
        workdir / "input_gradients.png",
        row_titles=["input-gradient"],
        column_titles=[f"y={int(a)} pred={int(b)}" for a, b in zip(y, pred, strict=True)],
        title="Signed input-gradients of the predicted logit",
    )
    results = {
        "test_accuracy": result["accuracy"],
        "test_loss": result["loss"],
        "num_test": int(result["count"]),
        "steps": int(shd.to_host(state.step)),
        "batch_size": batch_size,
        "devices": n_dev,
        "seconds": time.perf_counter() - t_start,
    }
    if jax.process_index() == 0:
        (workdir / "results.json").write_text(json.dumps(results, indent=2))
        _write_report(workdir, config, results, figure)
    return results


def _write_report(workdir: Path, config, results: dict, figure: Path) -> None:
    lines = [
        "# jaxgrad demo",
        "",
        f"Model `{config.model.name}` ({config.model.activation}) trained on `{config.data.source}` "
        f"for {results['steps']} steps of batch {results['batch_size']} with "
        f"{config.train.optimizer} (lr {config.train.learning_rate}) on {results['devices']} device(s), "
        f"in {results['seconds']:.1f} s including compilation.",
        "",
        "| metric | value |",
        "|---|---|",
        f"| test accuracy | {results['test_accuracy']:.4f} |",
        f"| test loss | {results['test_loss']:.4f} |",
        f"| test images | {results['num_test']} |",
        "",
        "## Signed input-gradients",
        "",
        f"![input-gradients]({figure.name})",
        "",
        "Each map is the gradient of the predicted class's logit with respect to the input, "
        "summed over channels, divided by the 99.5th percentile of its absolute value and "
        "clipped to [-1, 1]: red where increasing the pixel raises the logit, blue where it "
        "lowers it. The number under each map is the raw sum of the gradient.",
        "",
        "Files: `config.json`, `metrics.jsonl` (training and evaluation rows), `results.json`, "
        "`checkpoints/` (orbax; rerunning with the same workdir resumes from the newest).",
    ]
    (workdir / "report.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    launch(run, "demo", "Demo config.")
