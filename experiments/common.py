"""Pieces shared by the experiment mains: data, models and the one trainer, from config sections.

Every experiment config has the sections ``seed``, ``num_devices``, ``data`` (``source``,
``num_classes``), ``model`` (``name`` and the model's fields), ``train`` (see
:func:`train_model`) and ``evaluation`` (what is measured after training). Mains compose the
helpers here: :func:`load_splits`, :func:`make_mesh`, :func:`make_model`, then
:func:`train_model` once per model (with :func:`override` for per-model changes of the train
section) and :func:`retrainer` for evaluations that retrain (ROAR).

Randomness: every PRNG key of an experiment is ``fold_in(key(config.seed), purpose)`` with
one :class:`Purpose` tag per use (:func:`purpose_key`), further folded with an index where a
purpose has several members (one key per trained model, per control split).
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from experiments import report
from experiments.dry_run import DryRun, abstract_batch, abstract_key
from jaxgrad import sharding as shd
from jaxgrad.data import Dataset, get_augmentation, load_dataset, source_shape, steps_per_epoch
from jaxgrad.drivers import make_retrainer
from jaxgrad.models import get_model, linen_logit_fn
from jaxgrad.training import (
    CheckpointError,
    Diverged,
    Preempted,
    TrainState,
    abstract_train_state,
    classifier_loss,
    epoch_steps,
    evaluate,
    make_eval_step,
    make_optimizer,
    make_schedule,
    make_train_step,
    train_for_epochs,
    with_augmentation,
)


class Purpose(enum.IntEnum):
    """The tags of the experiments' PRNG keys; no two uses share one."""

    MODEL = 1  # a trained model: initialisation and batch order (one per model index)
    FINETUNE = 2  # batch order of a fine-tuning run
    JUDGE = 3  # the GAN-test judge: initialisation and batch order
    PGD_EVAL = 4  # random starts of the PGD attack that measures robust accuracy
    ROAR_RETRAIN = 5  # DiffROAR's retrainings (roar folds in the seed)
    CONTROL = 6  # draws of random controls (random attributions, random vectors)
    RANDOMIZATION = 7  # re-initialised weights of the cascading randomization
    ATTRIBUTION_NOISE = 8  # noise of stochastic attributions (SmoothGrad)
    PERTURBATION_ORDER = 9  # the random pixel order of pixel perturbation
    TRACE_PROBES = 10  # Hutchinson's probes
    START_NOISE = 11  # starting points of activation maximisation
    DENSITY_NOISE = 12  # noise of the density-ratio profile
    SUBSET = 13  # which training examples a small-data run sees (per size and repeat)
    STUDENT = 14  # a distilled student: initialisation, batch order, input noise
    SHIFT = 15  # the learned shift network: initialisation and batch order


def purpose_key(seed: int, purpose: Purpose, *index: int) -> jax.Array:
    """``fold_in(key(seed), purpose)``, then folded with each ``index`` (e.g. a model's)."""
    key = jax.random.fold_in(jax.random.key(seed), int(purpose))
    for i in index:
        key = jax.random.fold_in(key, i)
    return key


@dataclasses.dataclass
class Trained:
    """A trained model and what an experiment needs around it.

    Attributes:
      model: the Linen module.
      state: the final train state.
      logit_fn: ``linen_logit_fn(model)``.
      mesh: the data mesh it was trained on, or None.
      batch_size: the global batch size used (rounded up to the device count).
      eval_step: the jitted evaluation step of ``logit_fn``.
      test_metrics: ``{"loss", "accuracy", "count"}`` on the ``test`` split given to
        :func:`train_model`, or None without one.
    """

    model: nn.Module
    state: TrainState
    logit_fn: Callable
    mesh: Mesh | None
    batch_size: int
    eval_step: Callable
    test_metrics: dict[str, float] | None

    @property
    def variables(self) -> dict:
        """The trained variables (``{"params": ..., **model_state}``)."""
        return self.state.variables

    def evaluate(self, variables: Any, data: Dataset) -> dict[str, float]:
        """Loss and accuracy of ``variables`` (of this model) on ``data``."""
        return evaluate(self.eval_step, variables, data, batch_size=self.batch_size, mesh=self.mesh)


def override(section: ml_collections.ConfigDict, **fields: Any) -> ml_collections.ConfigDict:
    """A copy of a config section with some fields replaced (e.g. another model's epochs)."""
    out = section.copy_and_resolve_references()
    for name, value in fields.items():
        out[name] = value
    return out


def host_local() -> bool:
    """Whether this run's training splits are per-host shards: with several processes."""
    return jax.process_count() > 1


def load_splits(data: ml_collections.ConfigDict) -> tuple[Dataset, Dataset]:
    """The train and test splits of ``data.source``.

    With several processes (a pod slice) each host reads only its shard of the training
    split (``load_dataset(..., shard=...)``; tensorflow-datasets reads those examples by
    index) and training draws each host's part of a batch from it (:func:`host_local`);
    the test split is read whole on every host.
    """
    shard = (jax.process_index(), jax.process_count()) if host_local() else None
    splits = load_dataset(data.source, "train", shard=shard), load_dataset(data.source, "test")
    k = data.num_classes
    for name, split in zip(("train", "test"), splits, strict=True):
        labels = np.asarray(split["label"])
        lo_hi = np.asarray([labels.min(), -labels.max()] if len(labels) else [0, 0], np.int64)
        if shard is not None:  # every host checks the whole split's range, and agrees
            lo_hi = np.asarray(multihost_utils.process_allgather(lo_hi)).reshape(-1, 2).min(0)
        lo, hi = int(lo_hi[0]), int(-lo_hi[1])
        if lo < 0 or hi >= k:
            raise ValueError(
                f"config.data.num_classes is {k}, but the {name} labels of {data.source!r} "
                f"range over [{lo}, {hi}]: set it to {hi + 1}"
            )
    return splits


def check_train_section(section: ml_collections.ConfigDict, name: str = "train") -> None:
    """Refuses a train section that cannot train, naming the config key (before any work)."""

    def integer(field, low):
        v = section[field]
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
            raise ValueError(f"config.{name}.{field} must be an integer >= {low}, got {v!r}")

    integer("epochs", 1)
    integer("batch_size", 1)
    integer("max_steps", 0)
    integer("log_every", 1)
    integer("checkpoint_every", 1)
    integer("keep_checkpoints", 1)
    lr = section.learning_rate
    if isinstance(lr, bool) or not isinstance(lr, int | float | np.number) or not 0 < lr < np.inf:
        raise ValueError(f"config.{name}.learning_rate must be a finite number > 0, got {lr!r}")
    if section.weight_decay < 0 or section.weight_decay != section.weight_decay:
        raise ValueError(f"config.{name}.weight_decay must be >= 0, got {section.weight_decay!r}")


def global_mean(images: np.ndarray) -> float:
    """The mean value of a split, the same on every host (each may hold a shard of it)."""
    local = np.asarray([np.mean(images, dtype=np.float64), len(images)], np.float64)
    both = np.asarray(multihost_utils.process_allgather(local)).reshape(-1, 2)
    return float(np.sum(both[:, 0] * both[:, 1]) / np.sum(both[:, 1]))


def make_mesh(num_devices: int) -> Mesh:
    """A data mesh over every device (``num_devices=0``) or the first ``num_devices``."""
    devices = jax.devices()
    if num_devices:
        devices = devices[:num_devices]
    return shd.data_mesh(devices)


def make_model(model: ml_collections.ConfigDict, num_classes: int) -> nn.Module:
    """The Linen classifier of a ``model`` section: ``name`` and the module's fields."""
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in model.items() if k != "name"}
    return get_model(model.name, num_classes=num_classes, **fields)


# Train fields a resumed run may change: the length of the run and its bookkeeping.
RESUMABLE_CHANGES = ("epochs", "max_steps", "log_every", "checkpoint_every", "keep_checkpoints")


def run_identity(section: ml_collections.ConfigDict) -> str:
    """A digest of a train section, less :data:`RESUMABLE_CHANGES` (``fit``'s ``run_id``)."""
    fields = {k: v for k, v in section.to_dict().items() if k not in RESUMABLE_CHANGES}
    text = json.dumps(fields, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def train_model(
    model: nn.Module,
    loss_fn: Callable,
    data: Dataset,
    config: ml_collections.ConfigDict,
    *,
    key: jax.Array,
    init: dict | None = None,
    test: Dataset | None = None,
    mesh: Mesh | None = None,
    checkpoint_dir: Path | None = None,
    metrics_path: Path | None = None,
    tensorboard_dir: Path | None = None,
    progress: bool = True,
) -> Trained:
    """Trains ``model`` on ``data`` with ``loss_fn`` as a ``train`` section says.

    Args:
      model: a Linen module taking ``(x, train)``.
      loss_fn: ``(params, model_state, batch, key) -> (loss, (model_state, metrics))``, e.g.
        ``classifier_loss(model)``.
      data: the training split (its ``image`` and ``label`` are used).
      config: a train section (``experiments.configs.base.train``): ``optimizer``,
        ``learning_rate``, ``weight_decay``, ``momentum``, ``schedule`` (``milestones`` in
        epochs, ``gamma``), ``batch_size`` (rounded up to a multiple of the device count),
        ``epochs``, ``max_steps``, ``log_every``, and ``checkpoint_every`` /
        ``keep_checkpoints`` (used with ``checkpoint_dir``), and ``augment``, applied to
        every batch before ``loss_fn`` (``jaxgrad.training.with_augmentation``). Other
        fields are ignored.
      key: split into the initialisation key and the run's key (batch order and the
        per-step keys); with ``init`` the whole key is the run's.
      init: variables to start from (copied) instead of a fresh initialisation.
      test: a split evaluated at the end (``Trained.test_metrics``, and a row of
        ``metrics_path``).
      mesh: a data mesh, or None for the default device.
      checkpoint_dir: orbax checkpoints (and resuming from the newest); None keeps none.
      metrics_path: a JSON-lines file of training (and test) metrics, with throughput
        (examples per second, per device); None writes none.
      tensorboard_dir: TensorBoard event files of the same rows; None writes none.
      progress: print a line before training and progress lines every ``log_every`` steps.

    Returns:
      The :class:`Trained` model.
    """
    check_train_section(config)
    data = {"image": data["image"], "label": data["label"]}
    loss_fn = with_augmentation(loss_fn, augmentation(config))
    if test is not None:
        test = {"image": test["image"], "label": test["label"]}
    n_dev = 1 if mesh is None else mesh.devices.size
    num_examples = len(data["label"]) * (jax.process_count() if host_local() else 1)
    batch_size, num_steps = epoch_steps(
        num_examples, epochs=config.epochs, batch_size=config.batch_size, mesh=mesh
    )
    tx = make_tx(config, num_steps)
    if config.max_steps:
        num_steps = min(num_steps, config.max_steps)
    logit_fn = linen_logit_fn(model)
    eval_step = make_eval_step(logit_fn, mesh=mesh)
    test_metrics = None if test is None else {}

    def eval_fn(s: TrainState) -> dict[str, float]:
        test_metrics.update(
            evaluate(eval_step, s.variables, test, batch_size=batch_size, mesh=mesh)
        )
        return test_metrics

    if progress:
        print(
            f"training {type(model).__name__} on {num_examples} examples: {num_steps} "
            f"steps of batch {batch_size} on {n_dev} device(s)"
            + (f" (max_steps={config.max_steps})" if config.max_steps else ""),
            flush=True,
        )
    state = train_for_epochs(
        model,
        loss_fn,
        tx,
        data,
        key=key,
        epochs=config.epochs,
        batch_size=batch_size,
        mesh=mesh,
        init=init,
        max_steps=config.max_steps or None,
        host_local=host_local(),
        progress=progress,
        log_every=config.log_every,
        checkpoint_dir=checkpoint_dir,
        run_id=run_identity(config) if checkpoint_dir is not None else None,
        checkpoint_every=config.checkpoint_every,
        keep_checkpoints=config.keep_checkpoints,
        metrics_path=metrics_path,
        tensorboard_dir=tensorboard_dir,
        eval_fn=None if test is None else eval_fn,
    )
    if progress and test_metrics:
        print(
            f"test accuracy: {test_metrics['accuracy']:.4f} ({int(test_metrics['count'])} images)",
            flush=True,
        )
    return Trained(model, state, logit_fn, mesh, batch_size, eval_step, test_metrics)


def make_tx(config: ml_collections.ConfigDict, total_steps: int):
    """The optax optimizer of a train section for a run of ``total_steps`` (all epochs)."""
    per_epoch = total_steps // config.epochs
    schedule = make_schedule(
        config.schedule,
        config.learning_rate,
        total_steps=total_steps,
        milestones=[int(m) * per_epoch for m in config.milestones],
        gamma=config.gamma,
    )
    return make_optimizer(
        config.optimizer, schedule, momentum=config.momentum, weight_decay=config.weight_decay
    )


def augmentation(config: ml_collections.ConfigDict) -> Callable | None:
    """The ``augment`` of a train section as ``(key, images) -> images``, or None."""
    return get_augmentation(config.augment)


def train_classifier(config, train: Dataset, test: Dataset, workdir: Path) -> Trained:
    """The config's ``model`` trained with cross-entropy as its ``train`` section says.

    The key is ``purpose_key(config.seed, Purpose.MODEL)``; the mesh has
    ``config.num_devices`` devices; checkpoints (resumed from), metrics and TensorBoard
    events go to ``workdir/checkpoints``, ``workdir/metrics.jsonl`` and
    ``workdir/tensorboard``.
    """
    model = make_model(config.model, config.data.num_classes)
    return train_model(
        model,
        classifier_loss(model),
        train,
        config.train,
        key=purpose_key(config.seed, Purpose.MODEL),
        test=test,
        mesh=make_mesh(config.num_devices),
        checkpoint_dir=workdir / "checkpoints",
        metrics_path=workdir / "metrics.jsonl",
        tensorboard_dir=workdir / "tensorboard",
    )


def retrainer(
    model: nn.Module, config: ml_collections.ConfigDict, *, mesh=None
) -> Callable[[Dataset, Dataset, jax.Array], float]:
    """``retrain(train, test, key) -> test accuracy``: a fresh ``model`` as a train section says."""
    return make_retrainer(
        lambda: model,
        epochs=config.epochs,
        batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        optimizer=config.optimizer,
        schedule=config.schedule,
        weight_decay=config.weight_decay,
        momentum=config.momentum,
        milestones=tuple(config.milestones),
        gamma=config.gamma,
        augment=augmentation(config),
        mesh=mesh,
        host_local=host_local(),
        max_steps=config.max_steps or None,
    )


def model_dtype(config: ml_collections.ConfigDict) -> str:
    """The computation dtype of a config's model section(s) (``float32`` unless set)."""
    sections = [config.model] if "name" in config.model else list(config.model.values())
    dtypes = {s.get("dtype", "float32") for s in sections}
    return "bfloat16" if "bfloat16" in dtypes else "float32"


def plan_training(
    dry: DryRun,
    name: str,
    model: nn.Module,
    loss_fn: Callable,
    data: ml_collections.ConfigDict,
    config: ml_collections.ConfigDict,
    mesh: Mesh,
    *,
    unlooped_loss_fn: Callable | None = None,
    repeats: int = 1,
) -> dict:
    """Adds one :func:`train_model` run's programs to a dry run; returns abstract variables.

    The train step (called once per step of ``config``'s epochs, or ``max_steps``) at the
    global batch on ``mesh``, and the evaluation step over the test split at the end, both
    ``repeats`` times (e.g. ROAR's retrainings). ``unlooped_loss_fn``: the same loss with
    its loops unrolled (PGD's ascent), compiled for the FLOP count only.
    """
    n_train, image_shape = source_shape(data.source, "train")
    n_test, _ = source_shape(data.source, "test")
    batch_size, num_steps = epoch_steps(
        n_train, epochs=config.epochs, batch_size=config.batch_size, mesh=mesh
    )
    tx = make_tx(config, num_steps)
    if config.max_steps:
        num_steps = min(num_steps, config.max_steps)
    state = abstract_train_state(model, tx, (1, *image_shape))
    batch = abstract_batch(batch_size, image_shape)
    augment = augmentation(config)
    step = make_train_step(with_augmentation(loss_fn, augment), tx, mesh=mesh)
    flat = None
    if unlooped_loss_fn is not None:
        flat = make_train_step(with_augmentation(unlooped_loss_fn, augment), tx, mesh=mesh)
    dry.add(
        f"train step: {name}",
        step,
        state,
        batch,
        abstract_key(),
        calls=num_steps * repeats,
        sharded=True,
        flops_fn=flat,
        note=f"global batch {batch_size}",
    )
    variables = {"params": state.params, **state.model_state}
    eval_step = make_eval_step(linen_logit_fn(model), mesh=mesh)
    calls = steps_per_epoch(n_test, batch_size) * repeats
    dry.add(f"eval step: {name}", eval_step, variables, batch, calls=calls, sharded=True)
    return variables


def launch(
    run: Callable[[Any, Path], Any],
    name: str,
    description: str,
    plan: Callable[[Any, DryRun], None] | None = None,
) -> None:
    """The command line of an experiment: ``--config``, ``--workdir`` and ``--dry_run``.

    ``--config`` defaults to ``experiments/configs/<name>.py`` (``:smoke`` and other variants
    after a colon), ``--workdir`` to ``runs/<name>``. Logging is lowered to warnings (orbax
    logs every save at INFO) and several hosts are joined when present (a no-op on one host).
    ``--dry_run`` calls ``plan(config, dry)`` instead of ``run``: it adds the run's programs
    to a :class:`experiments.dry_run.DryRun`, which writes ``dry_run.json`` into the workdir.
    """
    from absl import app, flags, logging
    from ml_collections import config_flags

    # An override of no key: named before the flag parses (ml_collections would raise a
    # bare AttributeError while defining the flag, when it has a default).
    message = unknown_override(sys.argv, name)
    if message is not None:
        print(f"FATAL Flags parsing error: {message}", file=sys.stderr, flush=True)
        sys.exit(1)
    config_flags.DEFINE_config_file(
        "config", f"experiments/configs/{name}.py", description, lock_config=True
    )
    flags.DEFINE_string(
        "workdir", f"runs/{name}", "Where to write checkpoints, figures and the report."
    )
    flags.DEFINE_bool(
        "dry_run",
        False,
        "Compile every program of the run ahead of time at full size and write "
        "dry_run.json (FLOPs, memory per device, projected hours) instead of running.",
    )

    def main(argv) -> None:
        del argv
        logging.set_verbosity(logging.WARNING)
        shd.initialize_distributed()
        workdir = report.workdir_path(flags.FLAGS.workdir)
        config = flags.FLAGS.config
        if flags.FLAGS.dry_run:
            if plan is None:
                raise app.UsageError(f"{name} has no --dry_run plan")
            variant = (config_argument(sys.argv) or "").partition(":")[2]
            dry = DryRun(
                make_mesh(config.num_devices).devices.size,
                model_dtype(config),
                experiment=name + (f":{variant}" if variant else ""),
            )
            plan(config, dry)
            print(f"dry run: {dry.write(workdir, config)}", flush=True)
            return
        if "train" in config and all(
            f in config.train for f in ("epochs", "batch_size", "learning_rate", "max_steps")
        ):
            check_train_section(config.train)  # before any data is read
        try:
            run(config, workdir)
        except Preempted as e:  # SIGTERM/SIGINT: a checkpoint is saved; the command resumes
            print(f"{e}", flush=True)
            sys.exit(128 + e.signum)  # 143 or 130, as if the signal had ended the process
        except (Diverged, CheckpointError) as e:  # nothing poisoned or half-written was kept
            print(f"error: {e}", file=sys.stderr, flush=True)
            sys.exit(1)
        except FileNotFoundError as e:  # data not prepared: the message says what to do
            print(f"error: {e}", file=sys.stderr, flush=True)
            sys.exit(2)
        print(f"report: {workdir / 'report.md'}", flush=True)

    def parse(argv):
        try:
            return app.parse_flags_with_usage(argv)  # absl's own messages for flag errors
        except (AttributeError, KeyError) as e:  # ml_collections: an override of no key
            message = unknown_override(argv, name) or f"--config: {e}"
            print(f"FATAL Flags parsing error: {message}", file=sys.stderr, flush=True)
            sys.exit(1)

    app.run(main, flags_parser=parse)


# A --config.a.b=v override as ml_collections accepts it (one or two dashes, "no" for False).
OVERRIDE = re.compile(r"^-{1,2}(no)?config\.")


def config_argument(argv: list[str]) -> str | None:
    """The value of the last ``--config`` / ``-config`` flag of ``argv`` (``=`` or a space)."""
    value = None
    for i, a in enumerate(argv):
        if re.match(r"^-{1,2}config=", a):
            value = a.split("=", 1)[1]
        elif a in ("--config", "-config") and i + 1 < len(argv):
            value = argv[i + 1]
    return value


def unknown_override(argv: list[str], name: str) -> str | None:
    """The message for the first ``--config.a.b=v`` of ``argv`` that names no key, or None.

    Loads the config file (``--config``, or experiment ``name``'s default) as the flag
    would, walks each override's path and names the first missing key, the section it is
    missing from, the keys that section has and the closest of them.
    """
    import difflib
    import importlib.util

    path, _, variant = (config_argument(argv) or f"experiments/configs/{name}.py").partition(":")
    try:
        spec = importlib.util.spec_from_file_location("_config_file", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        config = module.get_config(variant or None)
    except Exception:  # a missing file or an unknown variant: the flag itself reports it
        return None
    for arg in argv:
        match = OVERRIDE.match(arg)
        if match is None:
            continue
        keys = arg[match.end() :].split("=", 1)[0].split(".")
        section, where = config, "config"
        for key in keys:
            if not isinstance(section, ml_collections.ConfigDict) or key not in section:
                known = (
                    sorted(section.keys()) if isinstance(section, ml_collections.ConfigDict) else []
                )
                close = difflib.get_close_matches(key, known, n=1)
                hint = f"; did you mean {where}.{close[0]}?" if close else ""
                return (
                    f"{arg.split('=', 1)[0]}: {where} has no key {key!r}"
                    + (f" (its keys: {', '.join(known)})" if known else f" ({where} is a value)")
                    + hint
                )
            section, where = section[key], f"{where}.{key}"
    return None
