"""A resumable, sharded training loop around :func:`make_train_step`.

``fit`` restores the newest checkpoint (if any) and continues from its step: batches are a
pure function of ``(data key, step)`` and step keys are ``fold_in(step key, step)``, so an
interrupted and resumed run is bit-for-bit the uninterrupted one. Metrics are read back from
the device every ``log_every`` steps only, with the throughput since the last row.

Preemption: with a ``checkpoint_dir``, SIGTERM (what a preemptible TPU VM or a cluster
scheduler sends before it stops a job) and SIGINT (Ctrl-C) are caught; ``fit`` finishes the
step in flight (with several processes: until the next log row, where they agree on one
step), saves a checkpoint, waits for it to be written and raises :class:`Preempted`. Running
the same command again resumes from that step.

Divergence: every step's metrics (the loss, its terms and the gradient norm) are checked for
non-finite values on the device, in the same dispatch that sums them for the log rows, and
the first non-finite step is kept there. It is read back at each log row and before each
checkpoint, together with a check of the parameters about to be saved: ``fit`` then raises
:class:`Diverged`, naming the step and its metrics, and saves nothing, so a checkpoint never
holds a non-finite state and the retention policy never deletes the last finite one.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from jaxgrad import sharding as shd
from jaxgrad._validation import (
    CALLABLE,
    KEY,
    NONNEGATIVE_INT,
    OPTIONAL_POSITIVE_INT,
    POSITIVE_INT,
    a_callable,
    check_split,
    checked,
    integer,
    linen_module,
    on_every_process,
    train_state,
)
from jaxgrad._validation import check_labels as _check_labels
from jaxgrad.data.base import Dataset
from jaxgrad.data.iterators import batches, steps_per_epoch
from jaxgrad.models.adapters import init_variables
from jaxgrad.training.checkpoint import Checkpointer, _from_process_0
from jaxgrad.training.logging import MetricWriter, Progress
from jaxgrad.training.state import (
    TrainState,
    create_train_state,
    make_train_step,
    train_state_from,
)


def _check_model_labels(model, data: Dataset, key: jax.Array) -> None:
    """Refuses labels outside ``[0, K)`` for a model of K logits, before any compilation.

    K comes from an abstract ``model.init_with_output`` on one image (no FLOPs). Under
    ``jit`` an out-of-range label would only show as a NaN loss at the first step.
    """
    if not np.size(data["label"]):
        return
    x0 = jax.ShapeDtypeStruct(
        (1, *np.shape(data["image"])[1:]), np.asarray(data["image"][:1]).dtype
    )
    k = jax.random.key(0) if key is None or key.ndim else key
    logits, _ = jax.eval_shape(lambda kk, x: model.init_with_output(kk, x, train=False), k, x0)
    _check_labels(data["label"], logits.shape[-1])


class Preempted(Exception):  # noqa: N818 - an event, not an error
    """A signal stopped :func:`fit`; the state of ``step`` is saved in ``checkpoint_dir``.

    Attributes:
      step: the saved step.
      checkpoint_dir: where it is saved.
      signum: the signal (``signal.SIGTERM`` or ``signal.SIGINT``).
    """

    def __init__(self, step: int, checkpoint_dir: str | Path, signum: int = signal.SIGTERM):
        name = signal.Signals(signum).name
        super().__init__(
            f"preempted ({name}) at step {step}: checkpoint saved in {checkpoint_dir}; "
            "run the same command again to resume"
        )
        self.step = step
        self.checkpoint_dir = checkpoint_dir
        self.signum = int(signum)


class Diverged(FloatingPointError):
    """Training produced a non-finite loss, gradient norm or parameter; nothing was saved.

    Attributes:
      step: the first step whose metrics (or, at a save, whose parameters) were not finite.
      metrics: that step's metrics (host floats), or None where the parameters were the
        first sign.
      last_checkpoint: the newest checkpoint step on disk (all finite), or None.
    """

    def __init__(self, step: int, metrics: dict | None, last_checkpoint: int | None, where):
        if metrics is None:
            what = "the parameters became non-finite (the metrics were finite)"
        else:
            bad = sorted(k for k, v in metrics.items() if not np.all(np.isfinite(v)))
            terms = ", ".join(f"{k}={float(np.mean(v)):.6g}" for k, v in sorted(metrics.items()))
            what = f"non-finite {', '.join(bad)} ({terms})"
        saved = (
            "no checkpoint was written"
            if last_checkpoint is None
            else f"the last checkpoint, all finite, is step {last_checkpoint} in {where}"
        )
        super().__init__(
            f"training diverged at step {step}: {what}; nothing after it was saved and "
            f"{saved}. Lower the learning rate or check the data and loss for NaN"
        )
        self.step = step
        self.metrics = metrics
        self.last_checkpoint = last_checkpoint


@contextlib.contextmanager
def _stop_flag(enabled: bool) -> Iterator[dict]:
    """``{"signum": None}``, set to SIGTERM or SIGINT's number when one arrives in the block.

    The previous handlers are restored after; a signal the process ignores stays ignored.
    Signal handlers can only be installed from the main thread; elsewhere (or when not
    ``enabled``) the signals keep their usual effect.
    """
    flag = {"signum": None}
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag["signum"] == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, without the save
        flag["signum"] = flag["signum"] or signum

    # A signal the process ignores (SIGINT under nohup, say) stays ignored.
    previous = {
        s: signal.signal(s, handler)
        for s in (signal.SIGTERM, signal.SIGINT)
        if signal.getsignal(s) is not signal.SIG_IGN
    }
    try:
        yield flag
    finally:
        for s, p in previous.items():
            # None: a handler installed outside Python, which cannot be put back from here.
            signal.signal(s, signal.SIG_DFL if p is None else p)


@jax.jit
def _accumulate(summed, first_bad, bad_metrics, metrics, step):
    """Adds a step's metrics to the sums and keeps the first non-finite step and its metrics."""
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in jax.tree.leaves(metrics)]))
    new = (first_bad < 0) & ~finite
    first_bad = jnp.where(new, step, first_bad)
    bad_metrics = jax.tree.map(lambda b, m: jnp.where(new, m, b), bad_metrics, metrics)
    return jax.tree.map(jnp.add, summed, metrics), first_bad, bad_metrics


@jax.jit
def _params_finite(params) -> jax.Array:
    leaves = [
        jnp.all(jnp.isfinite(p))
        for p in jax.tree.leaves(params)
        if jnp.issubdtype(p.dtype, jnp.inexact)
    ]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def _agreed(flag: dict) -> int:
    """The signal any process has seen, or 0 (every process gets the same answer).

    Several hosts receive the signal at slightly different moments; deciding on one step
    together keeps them in the same collectives (a host saving while another steps would
    block both). A host sync: called at log rows only when there are several processes.
    """
    if jax.process_count() == 1:
        return int(flag["signum"] or 0)
    seen = multihost_utils.process_allgather(np.asarray(flag["signum"] or 0, np.int32))
    return int(np.max(np.asarray(seen)))


# What makes a run another run (refused), and what a resume may change (a warning): a
# different slice rounds the global batch and splits the examples differently, and a longer
# run changes num_steps (and with it a schedule laid over the total).
_IDENTITY = ("run_id", "key", "params")


def _check_identity(ckpt: Checkpointer, identity: dict) -> None:
    """Refuses checkpoints of another run; records this run's identity in ``run.json``.

    Process 0 reads and decides; every process raises with its message.
    """
    path = ckpt.directory / "run.json"
    message, notes = "", ""
    if jax.process_index() == 0 and ckpt.all_steps() and path.exists():
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError):
            saved = None
        if saved is not None:
            differ = sorted(
                k for k in identity.keys() | saved.keys() if identity.get(k) != saved.get(k)
            )
            detail = {k: f"{k}: {saved.get(k)!r} there, {identity.get(k)!r} here" for k in differ}
            refused = [detail[k] for k in differ if k in _IDENTITY]
            if refused:
                message = (
                    f"checkpoint_dir {str(ckpt.directory)!r} holds checkpoints of another run "
                    f"({'; '.join(refused)}); resume with the same settings, or use another "
                    "folder"
                )
            notes = "; ".join(detail[k] for k in differ if k not in _IDENTITY)
    message = _from_process_0(message)
    if message:
        raise ValueError(message)
    if notes:
        warnings.warn(f"resuming {str(ckpt.directory)!r} with changes: {notes}", stacklevel=3)
    if jax.process_index() == 0:
        path.write_text(json.dumps(identity))


def _last(ckpt: Checkpointer | None) -> int | None:
    if ckpt is None:
        return None
    ckpt.wait()
    return ckpt.latest_step()


def _where(ckpt: Checkpointer | None) -> str:
    return "" if ckpt is None else str(ckpt.directory)


@checked(
    train_step=CALLABLE,
    key=KEY,
    batch_size=POSITIVE_INT,
    num_steps=NONNEGATIVE_INT,
    checkpoint_every=POSITIVE_INT,
    keep_checkpoints=POSITIVE_INT,
    log_every=POSITIVE_INT,
    eval_every=integer(0, optional=True),
    state=train_state,
    eval_fn=a_callable(optional=True),
    on_step=a_callable(optional=True),
)
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
    run_id: str | None = None,
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
      run_id: any string that identifies the run's settings (e.g. a hash of its config);
        kept with the checkpoints (``run.json``) with what ``fit`` knows of the run (the
        key, the batch size, the number of examples, the parameters' shapes). Resuming
        from checkpoints written under another identity is refused with the differences,
        instead of silently continuing another run's state. The checkpoint folder is
        locked while ``fit`` runs (:class:`Checkpointer`'s ``lock``).

    Returns:
      The final train state.

    Raises:
      Preempted: SIGTERM or SIGINT arrived (with ``checkpoint_dir``); the state is saved.
      Diverged: a step's loss, a loss term or the gradient norm, or the parameters about to
        be saved, were not finite (found at the next log row or checkpoint, at most
        ``log_every`` steps later; the step named is the first). Nothing was saved after it.
      jaxgrad.training.CheckpointError: a checkpoint could not be written (a full disk, a
        read-only folder): raised at the step after its asynchronous write failed (at the
        next log row with several processes), naming the step and the folder.
    """
    if num_steps < 0:
        raise ValueError(f"num_steps must be >= 0, got {num_steps}")
    check_split(data, "data")
    if getattr(train_step, "model", None) is not None:  # a step of jaxgrad's losses
        on_every_process(lambda: _check_model_labels(train_step.model, data, key))
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
            ckpt = Checkpointer(
                checkpoint_dir, save_every=checkpoint_every, keep=keep_checkpoints, lock=True
            )
            stack.callback(ckpt.close)
            identity = {
                "run_id": run_id,
                "key": np.asarray(jax.random.key_data(key)).ravel().tolist(),
                "batch_size": int(batch_size),
                "examples": int(len(data["label"])) * (jax.process_count() if host_local else 1),
                "num_steps": int(num_steps),
                "params": hashlib.sha256(
                    str(jax.tree.map(lambda a: (a.shape, str(a.dtype)), state.params)).encode()
                ).hexdigest()[:16],
            }
            _check_identity(ckpt, identity)
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
    # The first step whose metrics were not finite (-1: none yet) and those metrics, on device.
    first_bad, bad_metrics = None, None
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

    def check(state):
        """Raises :class:`Diverged` if a step so far or ``state``'s parameters were not finite."""
        if first_bad is None:
            return
        bad = int(shd.to_host(first_bad))
        if bad >= 0:
            raise Diverged(bad, shd.to_host(bad_metrics), _last(ckpt), _where(ckpt))
        if not bool(shd.to_host(_params_finite(state.params))):
            raise Diverged(step, None, _last(ckpt), _where(ckpt))

    with stack:
        stop = stack.enter_context(_stop_flag(ckpt is not None))
        for batch in it:
            if mesh is not None:
                batch = shd.shard_batch(batch, mesh)
            state, metrics = train_step(state, batch, step_key)
            step += 1
            if summed is None:
                summed = jax.tree.map(jnp.zeros_like, metrics)
            if first_bad is None:
                first_bad = jnp.asarray(-1, jnp.int32)
                bad_metrics = jax.tree.map(jnp.zeros_like, metrics)
            summed, first_bad, bad_metrics = _accumulate(
                summed, first_bad, bad_metrics, metrics, state.step
            )
            count += 1
            if on_step is not None:
                on_step(step, state)
            log_row = step % log_every == 0 or step == num_steps
            if log_row:
                check(state)
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
            if ckpt is not None and ckpt.due(step):
                check(state)  # a non-finite state is never saved
                if ckpt.save(step, state):
                    saved_step = step
            # One process: at every step; several: at log rows, where they agree.
            if ckpt is not None and (jax.process_count() == 1 or log_row):
                ckpt.poll()  # a failed asynchronous save raises now, not at the next save
                signum = _agreed(stop)
                if signum:
                    check(state)
                    if saved_step != step:
                        ckpt.save(step, state, force=True)
                    ckpt.wait()
                    raise Preempted(step, ckpt.directory, signum)
        check(state)
        if eval_fn is not None:
            writer.write(step, eval_fn(state), split="eval")
        if ckpt is not None and saved_step != step and step > start:
            ckpt.save(step, state, force=True)
        signum = _agreed(stop) if ckpt is not None else 0
        if signum:  # a signal during the final evaluation or save
            ckpt.wait()
            raise Preempted(step, ckpt.directory, signum)
    return state


@checked(num_examples=POSITIVE_INT, epochs=POSITIVE_INT, batch_size=POSITIVE_INT)
def epoch_steps(
    num_examples: int, *, epochs: int, batch_size: int, mesh: Mesh | None = None
) -> tuple[int, int]:
    """``(global batch, steps)`` of ``epochs`` passes over ``num_examples`` examples.

    The batch is ``batch_size`` rounded up to a multiple of the mesh's devices; the step
    count is what :func:`train_for_epochs` runs, and what a schedule's ``total_steps`` needs.
    """
    batch = shd.global_batch_size(batch_size, mesh)
    return batch, epochs * steps_per_epoch(num_examples, batch)


@checked(
    loss_fn=CALLABLE,
    key=KEY,
    epochs=POSITIVE_INT,
    batch_size=POSITIVE_INT,
    log_every=OPTIONAL_POSITIVE_INT,
    max_steps=integer(0, optional=True),
    model=linen_module,
)
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


@checked(
    loss_fn=CALLABLE,
    epochs=POSITIVE_INT,
    batch_size=POSITIVE_INT,
    max_steps=integer(0, optional=True),
    model=linen_module,
)
def train_seeds_for_epochs(
    model,
    loss_fn: Callable,
    tx,
    data: Dataset,
    *,
    keys: jax.Array,
    epochs: int,
    batch_size: int,
    max_steps: int | None = None,
) -> TrainState:
    """Several models of one architecture, one per key, trained together in one program.

    What :func:`train_for_epochs` does for each key (the same initialisation, batch order and
    per-step keys), with one compiled step that updates every model at once (a ``vmap`` over
    the models' states and their batches), on one device: ROAR / DiffROAR retrain a mask with
    several seeds, and small models fill a device far better together than one at a time.
    Memory grows with the number of models.

    Args:
      model: a Linen module taking ``(x, train)``.
      loss_fn: see :mod:`jaxgrad.training.losses`.
      tx: the optax optimizer.
      data: the training split (its ``image`` and ``label``).
      keys: ``[S]`` PRNG keys, one per model, each used as :func:`train_for_epochs`'s key.
      epochs, batch_size: the schedule's length and the batch size (of each model).
      max_steps: stop after this many steps if the epochs have more.

    Returns:
      The ``S`` final states stacked along a leading axis (``jax.tree.map(lambda a: a[s],
      state)`` is model ``s``).

    Raises:
      Diverged: a model's metrics (loss, gradient norm, the loss's own) were not finite at
        some step; the message names the step and the model.
    """
    keys = jnp.asarray(keys)
    if keys.ndim != 1 or not jnp.issubdtype(keys.dtype, jax.dtypes.prng_key):
        raise ValueError(
            f"keys must be a 1-D array of PRNG keys [S], got {keys.dtype} {keys.shape}"
        )
    batch, num_steps = epoch_steps(len(data["label"]), epochs=epochs, batch_size=batch_size)
    if max_steps is not None:
        if max_steps < 0:
            raise ValueError(f"max_steps must be >= 0 or None, got {max_steps}")
        num_steps = min(num_steps, max_steps)
    split = jax.vmap(jax.random.split)(keys)  # [S, 2]: (init, run), as train_for_epochs
    sample_x = jnp.asarray(data["image"][:1])
    if getattr(loss_fn, "model", None) is not None:  # a jaxgrad loss: its classifier's K
        _check_model_labels(loss_fn.model, data, None)

    def init(k):
        variables = init_variables(model, k, sample_x)
        params = variables.pop("params")
        return TrainState(jnp.zeros((), jnp.int32), params, variables, tx.init(params))

    state = jax.jit(jax.vmap(init))(split[:, 0])
    run_keys = split[:, 1]
    data_keys = jax.vmap(lambda k: jax.random.fold_in(k, 0))(run_keys)
    step_keys = jax.vmap(lambda k: jax.random.fold_in(k, 1))(run_keys)
    step = jax.jit(jax.vmap(make_train_step(loss_fn, tx, donate=False)), donate_argnums=(0,))
    data = {"image": data["image"], "label": data["label"]}
    iterators = [batches(data, key=k, batch_size=batch, num_steps=num_steps) for k in data_keys]
    history = []  # each step's metrics, on device
    for _ in range(num_steps):
        per_model = [next(it) for it in iterators]
        stacked = {name: np.stack([b[name] for b in per_model]) for name in per_model[0]}
        state, metrics = step(state, stacked, step_keys)
        history.append(metrics)
    if num_steps:
        stacked = jax.tree.map(lambda *m: jnp.stack(m), *history)  # name -> [steps, S]
        finite = np.asarray(
            functools.reduce(jnp.logical_and, [jnp.isfinite(v) for v in stacked.values()])
        )
        if not finite.all():
            first, model_index = (int(i[0]) for i in np.nonzero(~finite))
            bad = {k: float(np.asarray(v)[first, model_index]) for k, v in stacked.items()}
            bad["model"] = model_index  # which of the S models (named in the message)
            raise Diverged(
                first + 1,  # the step count after the update, as fit reports it
                bad,
                None,
                f"train_seeds_for_epochs (model {model_index} of {len(keys)})",
            )
    return state
