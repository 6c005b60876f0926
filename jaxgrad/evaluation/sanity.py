"""Sanity checks by model randomization (Adebayo et al. 2018; Sundararajan & Taly 2018).

``randomization_stages`` re-initialises the layers of a params pytree, from the output layer
down: cascading (each stage also keeps the layers randomized before it) or independent
(each stage randomizes one layer of the trained params). ``sanity_table`` attributes the
same inputs with the trained and with every randomized model and reports, per stage, method
and similarity metric, the mean over images with a 99% confidence interval.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxgrad.evaluation.similarity import spearman, spearman_abs, spearman_nz
from jaxgrad.types import LogitFn

MODES = ("cascading", "independent")


def layer_names(
    variables: Mapping[str, Any], model: Any = None, sample_x: jax.Array | None = None
) -> list[str]:
    """The top-level layers of ``variables["params"]``, output first.

    With ``model`` and ``sample_x`` the order is the model's call order (from an abstract
    ``model.init``), which is reliable. Without them it is the dict's order, which is the
    call order for freshly initialised Flax params but alphabetical after some round trips
    (a restored checkpoint, for one): pass the model, or ``layers=`` explicitly.
    """
    if model is not None:
        if sample_x is None:
            raise ValueError("layer_names with a model needs sample_x (one input, [1, *S])")
        import flax.linen as nn

        order: list[str] = []

        def record(next_fun, args, kwargs, context):
            path = context.module.scope.path if context.module.scope is not None else ()
            if len(path) == 1 and path[0] in variables["params"] and path[0] not in order:
                order.append(path[0])
            return next_fun(*args, **kwargs)

        with nn.intercept_methods(record):  # pytree dicts come back sorted; calls do not
            jax.eval_shape(lambda k: model.init(k, sample_x), jax.random.key(0))
        return list(reversed(order))
    return list(reversed(list(variables["params"])))


def _truncated_normal_like(key, tree, stddev):
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(key, len(leaves))
    return treedef.unflatten(
        [
            (stddev * jax.random.truncated_normal(k, -2.0, 2.0, leaf.shape)).astype(leaf.dtype)
            for k, leaf in zip(keys, leaves, strict=True)
        ]
    )


def randomization_stages(
    variables: Mapping[str, Any],
    *,
    key: jax.Array,
    layers: Sequence[str] | None = None,
    mode: str = "cascading",
    reinit: Callable[[jax.Array], Mapping[str, Any]] | None = None,
    stddev: float = 0.01,
) -> list[tuple[str, dict[str, Any]]]:
    """The trained variables and one randomized copy per layer.

    Args:
      variables: ``{"params": {layer: ...}, ...}`` (other collections, e.g. BatchNorm
        statistics, are kept as trained).
      key: PRNG key; stage ``i`` uses ``fold_in(key, i)``.
      layers: the layers to randomize, in order (default: :func:`layer_names` of
        ``variables``, the dict's order reversed; pass ``layer_names(variables, model, x)``
        for the model's call order, e.g. ``softmax_linear, fc1, hidden2, hidden1`` for the
        MNIST CNN).
      mode: ``"cascading"`` (cumulative, the papers' main test) or ``"independent"``.
      reinit: ``key -> fresh params tree`` (e.g. ``lambda k: init_variables(model, k, x)
        ["params"]``, the layers' own initializers); by default a truncated normal (at 2 std)
        with ``stddev`` for every weight and bias (the note's choice, std 0.01).
      stddev: the truncated normal's std when ``reinit`` is None.

    Returns:
      ``[("original", variables), (layer, randomized variables), ...]``.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    params = variables["params"]
    layers = layer_names(variables) if layers is None else list(layers)
    missing = [name for name in layers if name not in params]
    if missing:
        raise ValueError(f"layers {missing} are not in params; available: {list(params)}")
    stages = [("original", dict(variables))]
    current = dict(params)
    for i, name in enumerate(layers):
        k = jax.random.fold_in(key, i)
        if reinit is None:
            fresh = _truncated_normal_like(k, params[name], stddev)
        else:
            fresh = reinit(k)[name]
            if jax.tree.structure(fresh) != jax.tree.structure(params[name]):
                raise ValueError(f"reinit(key)[{name!r}] does not match the layer's params")
        base = current if mode == "cascading" else dict(params)
        current = {**base, name: fresh}
        stages.append((name, {**variables, "params": current}))
    return stages


def mean_ci99(values: np.ndarray) -> tuple[float, float, float]:
    """Mean and a 99% normal-approximation interval (mean +- 2.576 SE) over images."""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if not len(v):
        return float("nan"), float("nan"), float("nan")
    mean = float(v.mean())
    half = 2.5758293035489 * float(v.std(ddof=1)) / math.sqrt(len(v)) if len(v) > 1 else 0.0
    return mean, mean - half, mean + half


def default_metrics(x, baseline=0.0):
    """Signed Spearman, absolute Spearman and spearman_nz (pixels where ``x != baseline``)."""
    return {
        "spearman": spearman,
        "spearman_abs": spearman_abs,
        "spearman_nz": lambda a, b: spearman_nz(a, b, x, baseline),
    }


def sanity_table(
    methods: Mapping[str, Callable[..., jax.Array]],
    logit_fn: LogitFn,
    stages: Sequence[tuple[str, Mapping[str, Any]]],
    x: jax.Array,
    target: jax.Array,
    *,
    key: jax.Array | None = None,
    metrics: Mapping[str, Callable[[jax.Array, jax.Array], jax.Array]] | None = None,
) -> list[dict[str, Any]]:
    """Similarity of each randomized stage's attributions to the trained model's.

    Args:
      methods: ``{name: method}`` with the common signature (bind options with
        ``functools.partial``); each is jitted once and reused for every stage.
      logit_fn: ``(params, x) -> [B, K]``.
      stages: from :func:`randomization_stages`; the first is the reference.
      x: ``[B, *S]`` images; target: ``[B]`` labels (kept fixed across stages, as in the
        note: the same label as for the original image).
      key: PRNG key for stochastic methods (the same for every stage).
      metrics: ``{name: (a, b) -> [B]}``; default :func:`default_metrics` with a zero baseline.

    Returns:
      Rows ``{"stage", "method", "metric", "mean", "ci99_low", "ci99_high", "n"}``, plus one
      row per stage and method with metric ``"attribution_sum"`` (the mean raw sum per image).
    """
    metrics = default_metrics(x) if metrics is None else metrics
    x, target = jnp.asarray(x), jnp.asarray(target)
    rows = []
    for mname, method in methods.items():
        fn = jax.jit(lambda p, xx, tt, k, _m=method: _m(logit_fn, p, xx, tt, key=k))
        ref = None
        for stage, variables in stages:
            attr = fn(variables, x, target, key)
            if ref is None:
                ref = attr
            sums = np.asarray(jnp.sum(attr.reshape(len(attr), -1), axis=1))
            rows.append(_row(stage, mname, "attribution_sum", sums))
            for metric, fn_metric in metrics.items():
                rows.append(_row(stage, mname, metric, np.asarray(fn_metric(ref, attr))))
    return rows


def _row(stage, method, metric, values):
    mean, lo, hi = mean_ci99(values)
    return {
        "stage": stage,
        "method": method,
        "metric": metric,
        "mean": mean,
        "ci99_low": lo,
        "ci99_high": hi,
        "n": int(np.isfinite(values).sum()),
    }
