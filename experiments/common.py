"""Pieces shared by the experiment mains: training a classifier from a config section."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
from jax.sharding import Mesh

from jaxgrad import sharding as shd
from jaxgrad.data import Dataset, load_dataset, steps_per_epoch
from jaxgrad.models import get_model, linen_logit_fn
from jaxgrad.training import (
    TrainState,
    classifier_loss,
    create_train_state,
    evaluate,
    fit,
    make_eval_step,
    make_optimizer,
    make_schedule,
    make_train_step,
)


@dataclasses.dataclass
class Trained:
    """A trained classifier and what an experiment needs around it."""

    model: nn.Module
    state: TrainState
    logit_fn: Callable
    train: Dataset
    test: Dataset
    mesh: Mesh
    batch_size: int
    eval_step: Callable
    test_metrics: dict[str, float]

    def evaluate(self, variables: Any, data: Dataset | None = None) -> dict[str, float]:
        """Loss and accuracy of ``variables`` on ``data`` (the test split by default)."""
        data = self.test if data is None else data
        return evaluate(self.eval_step, variables, data, batch_size=self.batch_size, mesh=self.mesh)


def save_config(config, workdir: Path) -> None:
    """Writes ``config.json`` (process 0 only)."""
    if jax.process_index() == 0:
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))


def train_classifier(config, workdir: Path, key: jax.Array) -> Trained:
    """Trains ``config.model`` on ``config.data`` with ``config.train``; resumes from checkpoints.

    Checkpoints go to ``workdir/checkpoints`` and metrics to ``workdir/metrics.jsonl``.
    """
    init_key, train_key = jax.random.split(key)
    train = load_dataset(config.data.source, "train")
    test = load_dataset(config.data.source, "test")
    devices = jax.devices()
    if config.get("num_devices"):
        devices = devices[: config.num_devices]
    mesh = shd.data_mesh(devices)
    n_dev = mesh.devices.size
    batch_size = math.ceil(config.train.batch_size / n_dev) * n_dev
    num_steps = config.train.epochs * steps_per_epoch(len(train["label"]), batch_size)
    model = get_model(
        config.model.name,
        num_classes=config.data.num_classes,
        activation=config.model.activation,
        beta=config.model.beta,
    )
    schedule = make_schedule(
        config.train.schedule, config.train.learning_rate, total_steps=num_steps
    )
    tx = make_optimizer(config.train.optimizer, schedule, weight_decay=config.train.weight_decay)
    state = create_train_state(model, tx, init_key, train["image"][:1], mesh=mesh)
    train_step = make_train_step(classifier_loss(model), tx, mesh=mesh)
    logit_fn = linen_logit_fn(model)
    eval_step = make_eval_step(logit_fn, mesh=mesh)
    print(
        f"training {config.model.name} on {config.data.source}: {len(train['label'])} images, "
        f"{num_steps} steps of batch {batch_size} on {n_dev} device(s)",
        flush=True,
    )
    state = fit(
        state,
        train_step,
        train,
        key=train_key,
        batch_size=batch_size,
        num_steps=num_steps,
        mesh=mesh,
        checkpoint_dir=workdir / "checkpoints",
        checkpoint_every=config.train.checkpoint_every,
        keep_checkpoints=config.train.keep_checkpoints,
        metrics_path=workdir / "metrics.jsonl",
        log_every=config.train.log_every,
        eval_fn=lambda s: evaluate(eval_step, s.variables, test, batch_size=batch_size, mesh=mesh),
    )
    result = evaluate(eval_step, state.variables, test, batch_size=batch_size, mesh=mesh)
    print(f"test accuracy: {result['accuracy']:.4f} ({int(result['count'])} images)", flush=True)
    return Trained(model, state, logit_fn, train, test, mesh, batch_size, eval_step, result)


def launch(run: Callable[[Any, Path], Any], name: str, description: str) -> None:
    """The command line of an experiment: ``--config`` and ``--workdir``, then ``run``.

    ``--config`` defaults to ``experiments/configs/<name>.py`` (``:smoke`` and other variants
    after a colon), ``--workdir`` to ``runs/<name>``. Logging is lowered to warnings (orbax
    logs every save at INFO) and several hosts are joined when present (a no-op on one host).
    """
    from absl import app, flags, logging
    from ml_collections import config_flags

    config_flags.DEFINE_config_file(
        "config", f"experiments/configs/{name}.py", description, lock_config=True
    )
    flags.DEFINE_string(
        "workdir", f"runs/{name}", "Where to write checkpoints, figures and the report."
    )

    def main(argv) -> None:
        del argv
        logging.set_verbosity(logging.WARNING)
        shd.initialize_distributed()
        workdir = Path(flags.FLAGS.workdir)
        run(flags.FLAGS.config, workdir)
        print(f"report: {workdir.absolute() / 'report.md'}", flush=True)

    app.run(main)


def pyplot():
    """``matplotlib.pyplot`` on the file-only Agg backend (no display on CI or TPU VMs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def train_adam(config, model, loss_fn, data: Dataset, key: jax.Array, epochs: int) -> dict:
    """``{"params": ...}`` of ``model`` trained with Adam at ``config.learning_rate``.

    Batches of ``config.batch_size``, progress lines every 50 steps, no checkpoints: the
    short trainings of the BlockMNIST and score-matching experiments.
    """
    import optax

    from jaxgrad.training import train_for_epochs

    state = train_for_epochs(
        model,
        loss_fn,
        optax.adam(config.learning_rate),
        data,
        key=key,
        epochs=epochs,
        batch_size=config.batch_size,
        progress=True,
        log_every=50,
    )
    return {"params": state.params}
