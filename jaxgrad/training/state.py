"""The train state and the sharded, donated, once-compiled training and evaluation steps.

Follows big_vision's update step: shapes from ``eval_shape``, shardings decided once, the
state donated, the per-step key derived with ``fold_in(key, step)``, metrics returned as a
dict of device scalars (read back on the host only every few steps).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from jaxgrad import sharding as shd
from jaxgrad._validation import (
    BOOL,
    CALLABLE,
    KEY,
    LOGIT_FN,
    POSITIVE_INT,
    batch_array,
    check_labels,
    check_split,
    checked,
    linen_module,
    optax_transform,
    variables_dict,
)
from jaxgrad.data.iterators import eval_batches
from jaxgrad.models.adapters import init_variables
from jaxgrad.training.losses import LossFn, masked_mean
from jaxgrad.types import LogitFn


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training; a pytree of arrays (checkpointable as is).

    Attributes:
      step: int32 scalar, the number of updates done.
      params: trainable parameters (``variables["params"]``).
      model_state: other collections, e.g. ``{"batch_stats": ...}``; ``{}`` if none.
      opt_state: the optimizer's state.
    """

    step: jax.Array
    params: Any
    model_state: dict
    opt_state: Any

    @property
    def variables(self) -> dict:
        """The variables dict that ``model.apply`` (and ``linen_logit_fn``) take."""
        return {"params": self.params, **self.model_state}


@checked(model=linen_module, tx=optax_transform, key=KEY, sample_x=batch_array)
def create_train_state(
    model: nn.Module,
    tx: optax.GradientTransformation,
    key: jax.Array,
    sample_x: jax.Array,
    *,
    mesh: Mesh | None = None,
) -> TrainState:
    """Initialises a model and optimizer into a :class:`TrainState`.

    Args:
      model: Linen module taking ``(x, train)``.
      tx: optax optimizer.
      key: PRNG key for the initializers.
      sample_x: an input with the per-example shape, ``[B, *S]``.
      mesh: if given, the state is created directly replicated on the mesh.
    """
    sample_x = jnp.asarray(sample_x)

    def init():
        variables = init_variables(model, key, sample_x)
        params = variables.pop("params")
        return TrainState(jnp.zeros((), jnp.int32), params, variables, tx.init(params))

    if mesh is None:
        return jax.jit(init)()
    return jax.jit(init, out_shardings=shd.replicated(mesh))()


@checked(variables=variables_dict, tx=optax_transform)
def train_state_from(
    variables: dict, tx: optax.GradientTransformation, *, mesh: Mesh | None = None
) -> TrainState:
    """A fresh :class:`TrainState` (step 0, new optimizer state) holding a copy of ``variables``.

    For fine-tuning a trained model: the copy is taken on the host, so the train step may
    donate the new state's buffers while ``variables`` stay usable.

    Args:
      variables: ``{"params": ..., **other collections}``.
      tx: the optimizer whose state is initialised.
      mesh: if given, the state is replicated on it.
    """
    model_state = dict(shd.to_host(variables))
    params = model_state.pop("params")
    state = TrainState(np.zeros((), np.int32), params, model_state, tx.init(params))
    return jax.device_put(state) if mesh is None else shd.replicate(state, mesh)


@checked(loss_fn=CALLABLE, tx=optax_transform, donate=BOOL)
def make_train_step(
    loss_fn: LossFn,
    tx: optax.GradientTransformation,
    *,
    mesh: Mesh | None = None,
    donate: bool = True,
) -> Callable[[TrainState, dict, jax.Array], tuple[TrainState, dict]]:
    """Builds the jitted update ``step(state, batch, key) -> (new_state, metrics)``.

    Compiled once per batch shape. The state is donated (its buffers are reused for the new
    state: do not use the old one after the call). The per-step key is
    ``fold_in(key, state.step)``, so passing the same ``key`` every step is correct and a
    resumed run draws the same randomness as an uninterrupted one.

    Args:
      loss_fn: ``loss_fn(params, model_state, batch, key) -> (loss, (model_state, metrics))``,
        see :mod:`jaxgrad.training.losses`.
      tx: optax optimizer.
      mesh: a data mesh; the batch is expected sharded on ``data`` (see ``shard_batch``) and
        the state replicated. ``None`` runs on the default device.
      donate: donate the state's buffers.

    Returns:
      The jitted step. ``metrics`` holds ``loss``, ``grad_norm`` and the loss's own metrics.
    """

    def step(state: TrainState, batch: dict, key: jax.Array):
        step_key = jax.random.fold_in(key, state.step)
        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        (loss, (model_state, metrics)), grads = grad_fn(
            state.params, state.model_state, batch, step_key
        )
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        new_state = state.replace(
            step=state.step + 1, params=params, model_state=model_state, opt_state=opt_state
        )
        return new_state, {**metrics, "loss": loss, "grad_norm": optax.tree.norm(grads)}

    donate_argnums = (0,) if donate else ()
    if mesh is None:
        compiled = jax.jit(step, donate_argnums=donate_argnums)
    else:
        repl, data = shd.replicated(mesh), shd.batch_sharding(mesh)
        compiled = jax.jit(
            step,
            donate_argnums=donate_argnums,
            in_shardings=(repl, data, repl),
            out_shardings=(repl, repl),
        )
    # The model behind a jaxgrad loss, so that fit can check labels against its logits.
    compiled.model = getattr(loss_fn, "model", None)
    return compiled


@checked(logit_fn=LOGIT_FN)
def make_eval_step(logit_fn: LogitFn, *, mesh: Mesh | None = None) -> Callable[[Any, dict], dict]:
    """Builds the jitted ``eval_step(params, batch) -> sums`` for a ``logit_fn``.

    Returns masked sums (``loss_sum``, ``correct``, ``count``) so that batches add up
    exactly; :func:`evaluate` turns them into means.
    """

    def eval_step(params, batch):
        logits = logit_fn(params, batch["image"])
        labels = batch["label"]
        mask = batch.get("mask", jnp.ones(labels.shape, jnp.float32))
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
        return {
            "loss_sum": jnp.sum(loss * mask),
            "correct": jnp.sum(correct * mask),
            "count": jnp.sum(mask),
        }

    if mesh is None:
        compiled = jax.jit(eval_step)
    else:
        compiled = jax.jit(
            eval_step,
            in_shardings=(shd.replicated(mesh), shd.batch_sharding(mesh)),
            out_shardings=shd.replicated(mesh),
        )
    compiled.logit_fn = logit_fn  # so that evaluate can check labels against the logits
    return compiled


@checked(eval_step=CALLABLE, batch_size=POSITIVE_INT)
def evaluate(
    eval_step: Callable, params: Any, data: dict, *, batch_size: int, mesh: Mesh | None = None
) -> dict[str, float]:
    """Loss and accuracy of ``params`` over a whole data split (padded, masked batches).

    Returns:
      ``{"loss": ..., "accuracy": ..., "count": ...}`` as Python floats.
    """
    check_split(data, "data")
    logit_fn = getattr(eval_step, "logit_fn", None)  # set by make_eval_step
    if logit_fn is not None and np.size(data["label"]):
        x0 = jax.ShapeDtypeStruct((1, *np.shape(data["image"])[1:]), data["image"].dtype)
        check_labels(data["label"], jax.eval_shape(logit_fn, params, x0).shape[-1])
    totals = None
    for batch in eval_batches(
        data, batch_size, process_index=jax.process_index(), process_count=jax.process_count()
    ):
        if mesh is not None:
            batch = shd.shard_batch(batch, mesh)
        sums = eval_step(params, batch)
        totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
    totals = shd.to_host(totals)
    count = float(totals["count"])
    return {
        "loss": float(totals["loss_sum"]) / count,
        "accuracy": float(totals["correct"]) / count,
        "count": count,
    }


__all__ = [
    "TrainState",
    "create_train_state",
    "train_state_from",
    "evaluate",
    "make_eval_step",
    "make_train_step",
    "masked_mean",
]
