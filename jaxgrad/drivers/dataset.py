"""Attributing a whole data set in sharded batches, with progress lines."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from jaxgrad import sharding as shd
from jaxgrad._validation import (
    CALLABLE,
    LOGIT_FN,
    OPTIONAL_KEY,
    check_finite,
    check_target,
    checked,
    on_every_process,
)
from jaxgrad.training.logging import Progress
from jaxgrad.types import LogitFn, Params

TARGET_FROM = ("label", "predicted")


class DatasetAttribution(NamedTuple):
    """Attributions of a whole data set and the targets they explain.

    Attributes:
      attribution: ``[N, *S]`` numpy, the real rows only (padding dropped).
      target: ``[N]`` int numpy, the class each row's attribution explains.
    """

    attribution: np.ndarray
    target: np.ndarray


def _gather(x: jax.Array) -> np.ndarray:
    if jax.process_count() == 1 or x.is_fully_addressable:
        return np.asarray(jax.device_get(x))
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


@checked(method=CALLABLE, logit_fn=LOGIT_FN, key=OPTIONAL_KEY)
def attribute_dataset(
    method: Callable[..., jax.Array],
    logit_fn: LogitFn,
    params: Params,
    batches: Iterable[Mapping[str, Any]],
    *,
    mesh: Mesh | None = None,
    key: jax.Array | None = None,
    target_from: str | Callable[[Mapping[str, Any]], Any] = "label",
    num_batches: int | None = None,
    progress: bool = True,
    **method_kwargs: Any,
) -> DatasetAttribution:
    """Runs ``method`` over every batch and returns the attributions of the real rows.

    The method is jitted once (``method_kwargs`` are bound statically) and, with ``mesh``,
    each batch is sharded over the mesh's ``data`` axis and the params replicated, so every
    device attributes its part of the batch. Padded rows (``mask == 0``, as produced by
    ``jaxgrad.data.eval_batches``) are dropped from the result.

    Args:
      method: an attribution function with the common signature.
      logit_fn: ``(params, x) -> [B, K]``.
      params: the model's params.
      batches: an iterable of ``{"image": [B, *S], "label": [B], "mask": [B] (optional)}``;
        with several processes, each process's own part of every global batch.
      mesh: a ``jaxgrad.sharding.data_mesh``; ``None`` runs on the default device.
      key: PRNG key for stochastic methods; batch ``i`` uses ``fold_in(key, i)``.
      target_from: where each row's ``target`` comes from: ``"label"``, ``"predicted"`` (the
        model's argmax) or a function ``batch -> int [B]``.
      num_batches: the number of batches, for the progress line's ETA (``len(batches)``
        when it has one).
      progress: print progress lines (rate, examples/s, ETA).
      **method_kwargs: passed to ``method`` (e.g. ``steps=64, chunk_size=16``).

    Returns:
      ``DatasetAttribution(attribution [N, *S], target [N])``, numpy.
    """
    if not (callable(target_from) or target_from in TARGET_FROM):
        raise ValueError(
            f"target_from must be one of {TARGET_FROM} or a function, got {target_from!r}"
        )
    if isinstance(batches, Mapping):
        raise TypeError(
            "batches must be an iterable of batch dicts (e.g. jaxgrad.data.eval_batches(data, "
            f"256)), got a dict with keys {sorted(batches)}: pass eval_batches(data, batch_size)"
        )
    if num_batches is None and hasattr(batches, "__len__"):
        num_batches = len(batches)

    def run(p, x, t, k):
        if isinstance(t, str):  # "predicted"
            t = jnp.argmax(logit_fn(p, x), axis=-1)
        kw = dict(method_kwargs)
        if k is not None:
            kw["key"] = k
        return method(logit_fn, p, x, t, **kw), t

    if mesh is not None:
        params = shd.replicate(params, mesh)
    compiled = {}
    num_classes = None
    outputs, targets = [], []
    # Started before the first batch, so that the first rate counts its compilation.
    bar = Progress(num_batches, name="attribute", unit="batch") if progress else None
    i = -1
    for i, batch in enumerate(batches):
        x = np.asarray(batch["image"])
        if target_from == "label":
            t = np.asarray(batch["label"])
        elif target_from == "predicted":
            t = "predicted"
        else:
            t = np.asarray(target_from(batch))
        mask = np.asarray(batch.get("mask", np.ones(len(x))), bool)
        # Host-level checks, by index, before the compiled call (where they could not be),
        # agreed by every process (a host's batch may fail alone).
        if not isinstance(t, str) and num_classes is None:
            num_classes = jax.eval_shape(
                logit_fn, params, jax.ShapeDtypeStruct(x.shape, x.dtype)
            ).shape[-1]

        def host_checks(x=x, t=t, mask=mask, i=i, num_classes=num_classes):
            check_finite(
                np.where(mask.reshape(-1, *[1] * (x.ndim - 1)), x, 0.0), f"batch {i}'s image"
            )
            if not isinstance(t, str):
                check_target(np.where(mask, t, 0), len(x), num_classes)

        on_every_process(host_checks)
        k = None if key is None else jax.random.fold_in(key, i)
        if mesh is not None:
            x = shd.shard_batch(x, mesh)
            t = t if isinstance(t, str) else shd.shard_batch(t, mesh)
            k = None if k is None else shd.replicate(k, mesh)
        fn = compiled.get(isinstance(t, str))
        if fn is None:
            static = (2,) if isinstance(t, str) else ()
            fn = compiled[isinstance(t, str)] = jax.jit(run, static_argnums=static)
        attr, used = fn(params, x, t, k)
        if jax.process_count() > 1:
            mask = np.asarray(multihost_utils.process_allgather(mask, tiled=True))
        attr, used = _gather(attr), _gather(used)
        outputs.append(attr[mask])
        targets.append(used[mask])
        if bar is not None:
            bar.examples_per_step = bar.examples_per_step or len(attr)
            bar.update(i + 1)
    if bar is not None and num_batches is None:
        bar.update(i + 1, force=True)  # the final count, when there was no total to reach
    if not outputs:
        raise ValueError("batches is empty")
    return DatasetAttribution(np.concatenate(outputs), np.concatenate(targets))
