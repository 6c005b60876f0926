"""A resumable, sharded training loop around :func:`make_train_step`.

``fit`` restores the newest checkpoint (if any) and continues from its step: batches are a
pure function of ``(data key, step)`` and step keys are ``fold_in(step key, step)``, so an
interrupted and resumed run is bit-for-bit the uninterrupted one. Metrics are read back from
the device every ``log_every`` steps only, with the throughput since the last row.

Preemption: with a ``checkpoint_dir``, SIGTERM (what a preemptible TPU VM or a cluster
scheduler sends before it stops a job) is caught; ``fit`` finishes the step in flight (with
several processes: until the next log row, where they agree on one step), saves a
checkpoint, waits for it to be written and raises :class:`Preempted`. Running the same
command again resumes from that step.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from jaxgrad import sharding as shd
from jaxgrad.data.base import Dataset
from jaxgrad.data.iterators import batches, steps_per_epoch
from jaxgrad.training.checkpoint import Checkpointer
from jaxgrad.training.logging import MetricWriter, Progress
from jaxgrad.training.state import (
    TrainState,
    create_train_state,
    make_train_step,
    train_state_from,
)


class Preempted(Exception):  # noqa: N818 - an event, not an error
    """SIGTERM stopped :func:`fit`; the state of ``step`` is saved in ``checkpoint_dir``."""

    def __init__(self, step: int, checkpoint_dir: str | Path):
        super().__init__(
            f"preempted (SIGTERM) at step {step}: checkpoint saved in {checkpoint_dir}; "
            "run the same command again to resume"
        )
        self.step = step
        self.checkpoint_dir = checkpoint_dir


@contextlib.contextmanager
def _sigterm_flag(enabled: bool) -> Iterator[threading.Event]:
    """An event set by SIGTERM while the block runs (the previous handler restored after).

    Signal handlers can only be installed from the main thread; elsewhere (or when not
    ``enabled``) SIGTERM keeps its usual effect.
    """
    flag = threading.Event()
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: flag.set())
    try:
        yield flag
    finally:
        # None: a handler installed outside Python, which cannot be put back from here.
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def _agreed(flag: threading.Event) -> bool:
    """Whether any process has seen SIGTERM (every process gets the same answer).

    Several hosts receive the signal at slightly different moments; deciding on one step
    together keeps them in the same collectives (a host saving while another steps would
    block both). A host sync: called at log rows only when there are several processes.
    """
    if jax.process_count() == 1:
        return flag.is_set()
    seen = multihost_utils.process_allgather(np.asarray(flag.is_set(), np.int32))
    return bool(np.asarray(seen).any())


def fit(
    state: TrainState,
    train_step: Callable,
    data: Dataset,
    *,
    key: jax.Array,
    batch_size: int,
    num_steps: int,
    mesh: Mesh | None = None,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 1000,
    keep_checkpoints: int = 3,
    metrics_path: str | Path | None = None,
    tensorboard_dir: str | Path | None = None,
    log_every: int = 50,
    eval_fn: Callable[[TrainState], dict[str, float]] | None = None,
    eval_every: int | None = None,
    progress: bool = True,
    on_step: Callable[[int, TrainState], None] | None = None,
    host_local: bool = False,
) -> TrainState:
    """Trains ``state`` for ``num_steps`` total steps (counting steps already done).

    Args:
      state: the initial train state (replicated on ``mesh`` if one is given); ignored in
        favour of the newest checkpoint when ``checkpoint_dir`` holds one.
      train_step: from :func:`make_train_step` (with the same ``mesh``).
      data: the training split, ``{"image", "label"}`` arrays.
      key: the run's key; split into a data-order key and a step key.
      batch_size: global batch size (divisible by the device count when sharded).
      num_steps: the step count to train up to.
      mesh: data mesh, or None for one device.
      checkpoint_dir: where to save every ``checkpoint_every`` steps (and at the end, and
        on SIGTERM), keeping ``keep_checkpoints``; local or remote (``gs://``); None
        disables checkpoints (and the SIGTERM handler). Orbax also saves the first step of
        a run into an empty folder. Resuming assumes the same ``key``, ``batch_size`` and
        data: the restored step is all that is read back.
      metrics_path: JSON-lines file for training (and evaluation) metrics; each training
        row also has ``examples_per_second`` and ``examples_per_second_per_device`` since
        the previous row (host time, so it includes input and dispatch; the first row
        also includes compilation).
      tensorboard_dir: also write the rows as TensorBoard event files there.
      log_every: steps between metric read-backs (a host sync) and log rows.
      eval_fn: optional ``state -> metrics dict`` run every ``eval_every`` steps and at the end.
      progress: print progress lines with rate and ETA.
      on_step: optional ``(step, state)`` callback after each update (e.g. for tests).
      host_local: ``data`` is this process's shard of the split (``load_dataset(...,
        shard=(jax.process_index(), jax.process_count()))``, equal sizes on every host):
        each process draws its ``batch_size / process_count`` examples of every global
        batch from its own shard, shuffled with the data key folded with its index, instead
        of slicing one global order of the whole split that every host holds. With one
        process it changes nothing.

    Returns:
      The final train state.

    Raises:
      Preempted: SIGTERM arrived (with ``checkpoint_dir``); the state is saved.
    """
    if num_steps < 0:
        raise ValueError(f"num_steps must be >= 0, got {num_steps}")
    for name, value in (("log_every", log_every), ("checkpoint_every", checkpoint_every)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if eval_every is not None and eval_every < 0:
        raise ValueError(f"eval_every must be >= 0 or None, got {eval_every}")
    data_key, step_key = jax.random.fold_in(key, 0), jax.random.fold_in(key, 1)
    pi, pc = jax.process_index(), jax.process_count()
    if host_local and pc > 1:
        if batch_size % pc:
            raise ValueError(
                f"host_local: batch_size ({batch_size}) must be divisible by {pc} processes"
            )
        sizes = np.asarray(multihost_utils.process_allgather(np.int64(len(data["label"]))))
        if len(set(sizes.ravel().tolist())) != 1:
            raise ValueError(
                f"host_local: every process must hold a shard of the same size (equal step "
                f"counts), got {sizes.ravel().tolist()}; use load_dataset(..., shard=...)"
            )
        data_key, batch_size_here = jax.random.fold_in(data_key, pi), batch_size // pc
        pi, pc = 0, 1  # this process's shard is all the iterator sees
    else:
        batch_size_here = batch_size
    stack = contextlib.ExitStack()  # closes the writer and the checkpointer on any exit
    try:
        writer = MetricWriter(metrics_path, tensorboard_dir=tensorboard_dir)
        stack.callback(writer.close)
        ckpt = None
        if checkpoint_dir is not None:
            ckpt = Checkpointer(checkpoint_dir, save_every=checkpoint_every, keep=keep_checkpoints)
            stack.callback(ckpt.close)
            restored = ckpt.restore_latest(state)
            if restored is not None:
                state = restored
        start = int(shd.to_host(state.step))
        if mesh is not None:
            step_key = shd.replicate(step_key, mesh)
    except BaseException:
        stack.close()
        raise
    num_devices = 1 if mesh is None else mesh.devices.size
    bar = Progress(num_steps, start=start, examples_per_step=batch_size) if progress else None
    summed: dict[str, Any] | None = None  # metrics summed on device since the last log
    count = 0
    it = batches(
        data,
        key=data_key,
        batch_size=batch_size_here,
        start_step=start,
        num_steps=max(num_steps - start, 0),
        process_index=pi,
        process_count=pc,
    )
    step = saved_step = start
    last_time, last_step = time.perf_counter(), start
    with stack:
        stop = stack.enter_context(_sigterm_flag(ckpt is not None))
        for batch in it:
            if mesh is not None:
                batch = shd.shard_batch(batch, mesh)
            state, metrics = train_step(state, batch, step_key)
            step += 1
            summed = metrics if summed is None else jax.tree.map(jnp.add, summed, metrics)
            count += 1
            if on_step is not None:
                on_step(step, state)
            log_row = step % log_every == 0 or step == num_steps
            if log_row:
                mean = {k: v / count for k, v in shd.to_host(summed).items()}
                now = time.perf_counter()  # after the read-back: the steps have run
                rate = (step - last_step) * batch_size / max(now - last_time, 1e-9)
                last_time, last_step = now, step
                summed, count = None, 0
                writer.write(
                    step,
                    mean,
                    split="train",
                    examples_per_second=rate,
                    examples_per_second_per_device=rate / num_devices,
                )
                if bar is not None:
                    bar.update(step, mean)
            if eval_fn is not None and eval_every and step % eval_every == 0 and step != num_steps:
                writer.write(step, eval_fn(state), split="eval")
            if ckpt is not None and ckpt.save(step, state):
                saved_step = step
            # One process: at every step; several: at log rows, where they agree.
            if ckpt is not None and (jax.process_count() == 1 or log_row) and _agreed(stop):
                if saved_step != step:
                    ckpt.save(step, state, force=True)
                ckpt.wait()
                raise Preempted(step, ckpt.directory)
        if eval_fn is not None:
            writer.write(step, eval_fn(state), split="eval")
        if ckpt is not None and saved_step != step and step > start:
            ckpt.save(step, state, force=True)
        if ckpt is not None and _agreed(stop):  # SIGTERM during the final evaluation or save
            ckpt.wait()
            raise Preempted(step, ckpt.directory)
    return state


def epoch_steps(
    num_examples: int, *, epochs: int, batch_size: int, mesh: Mesh | None = None
) -> tuple[int, int]:
    """``(global batch, steps)`` of ``epochs`` passes over ``num_examples`` examples.

    The batch is ``batch_size`` rounded up to a multiple of the mesh's devices; the step
    count is what :func:`train_for_epochs` runs, and what a schedule's ``total_steps`` needs.
    """
    batch = shd.global_batch_size(batch_size, mesh)
    return batch, epochs * steps_per_epoch(num_examples, batch)


def train_for_epochs(
    model,
    loss_fn: Callable,
    tx,
    data: Dataset,
    *,
    key: jax.Array,
    epochs: int,
    batch_size: int,
    mesh: Mesh | None = None,
    init: dict | None = None,
    progress: bool = False,
    log_every: int | None = None,
    max_steps: int | None = None,
    host_local: bool = False,
    **fit_options: Any,
) -> TrainState:
    """``model`` trained ``epochs`` times over ``data`` with ``loss_fn`` and ``tx``.

    The short form of ``create_train_state`` + ``make_train_step`` + :func:`fit`, used by
    evaluations that retrain (ROAR) and by the experiments' trainer. With ``mesh``,
    ``batch_size`` is rounded up to a multiple of the device count.

    Args:
      model: a Linen module taking ``(x, train)``.
      loss_fn: see :mod:`jaxgrad.training.losses`.
      tx: the optax optimizer.
      data: the training split (its ``image`` and ``label``).
      key: split into the initialisation key and the run's key (batch order, per-step
        keys); with ``init`` the whole key is the run's.
      epochs, batch_size: the schedule's length and the global batch size.
      mesh: a data mesh, or None for the default device.
      init: variables to start from (copied, see :func:`train_state_from`) instead of a
        fresh initialisation.
      progress, log_every: as for :func:`fit` (``log_every`` defaults to once, at the end).
      max_steps: stop after this many steps if the epochs have more (e.g. a few steps of a
        full-size schedule, to test it); None runs them all.
      host_local: ``data`` is this process's shard of the split (see :func:`fit`); an
        epoch is then a pass over every host's shard.
      **fit_options: the rest of :func:`fit`'s options (``checkpoint_dir``,
        ``metrics_path``, ``eval_fn``, ...).
    """
    num_examples = len(data["label"]) * (jax.process_count() if host_local else 1)
    batch, num_steps = epoch_steps(num_examples, epochs=epochs, batch_size=batch_size, mesh=mesh)
    if max_steps is not None:
        if max_steps < 0:
            raise ValueError(f"max_steps must be >= 0 or None, got {max_steps}")
        num_steps = min(num_steps, max_steps)
    if init is None:
        init_key, run_key = jax.random.split(key)
        state = create_train_state(model, tx, init_key, data["image"][:1], mesh=mesh)
    else:
        run_key, state = key, train_state_from(init, tx, mesh=mesh)
    step = make_train_step(loss_fn, tx, mesh=mesh)
    return fit(
        state,
        step,
        {"image": data["image"], "label": data["label"]},
        key=run_key,
        batch_size=batch,
        num_steps=num_steps,
        mesh=mesh,
        progress=progress,
        log_every=log_every or max(num_steps, 1),
        host_local=host_local,
        **fit_options,
    )
