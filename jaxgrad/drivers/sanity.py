"""The sanity-check table (Adebayo et al. 2018; Sundararajan & Taly 2018): a host-side driver.

``sanity_table`` attributes the same inputs with the trained and with every randomized model
(``jaxgrad.evaluation.randomization_stages``) and reports, per stage, method and similarity
metric, the mean over images with a 99% confidence interval.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxgrad._validation import check_finite, check_inputs, check_target, check_x
from jaxgrad.evaluation.similarity import spearman, spearman_abs, spearman_nz
from jaxgrad.types import LogitFn


def mean_ci99(values: np.ndarray) -> tuple[float, float, float]:
    """Mean and a 99% normal-approximation interval (mean +- 2.576 SE) over images."""
    v = np.asarray(values, np.float64)
    if not v.size:
        raise ValueError("values is empty: no per-image values to average")
    # Non-finite values are left out on purpose: Spearman is undefined (NaN) where a map is
    # constant, and the rows report how many values were finite ("n").
    v = v[np.isfinite(v)]
    if not len(v):
        return float("nan"), float("nan"), float("nan")
    mean = float(v.mean())
    half = 2.5758293035489 * float(v.std(ddof=1)) / math.sqrt(len(v)) if len(v) > 1 else 0.0
    return mean, mean - half, mean + half


def default_metrics(x, baseline=0.0):
    """Signed Spearman, absolute Spearman and spearman_nz (pixels where ``x != baseline``)."""
    check_finite(x, "x")
    x = check_x(x)
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
    if not methods:
        raise ValueError("methods is empty: pass {name: method}")
    stages = list(stages)
    if not stages:
        raise ValueError("stages is empty: the first stage is the reference (randomization_stages)")
    x, target = check_inputs(x, target)
    num_classes = jax.eval_shape(logit_fn, stages[0][1], x).shape[-1]
    target = check_target(target, x.shape[0], num_classes)
    metrics = default_metrics(x) if metrics is None else metrics
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
