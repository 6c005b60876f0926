"""Pixel perturbation: remove the least (or most) salient pixels and watch the classifier.

For each fraction ``m`` of the ``P = H * W`` pixels, exactly ``round(m * P)`` pixels are
replaced in every image, chosen by a per-pixel salience (the attribution aggregated over
channels by a named rule), and the target logit, its probability and the accuracy are
recorded. The whole curve over fractions is one compiled computation (a ``vmap`` over the
fractions, or ``chunk_size`` of them at a time).

Two protocols in the literature use it: FullGrad (Srinivas & Fleuret 2019) removes the
*least* salient pixels, fills them with black and reports the absolute fractional output
change ``|f(x) - f(x~)| / |f(x)|`` (lower is better); Srinivas & Fleuret (2021) argue that a
logit change measures the implicit density rather than the explanation, and report the
*accuracy* after removing the least salient pixels, salience being the standard deviation of
the signed gradient over colour channels (``aggregate="std"``), the fill the image mean in
their text and a constant 0.5 in their code. ``order="random"`` is the control.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxgrad._chunking import merged_map, repeat_examples
from jaxgrad._filters import gaussian_blur
from jaxgrad._validation import (
    FINITE,
    LOGIT_FN,
    OPTIONAL_KEY,
    OPTIONAL_POSITIVE_INT,
    POSITIVE,
    check_choice,
    check_finite,
    check_fractions,
    check_images,
    check_inputs,
    check_positive_int,
    checked,
    is_concrete,
)
from jaxgrad.gradients import select_logits
from jaxgrad.types import ArrayLike, LogitFn, Params

AGGREGATES = ("abs_sum", "std", "sum", "max_abs")
FILLS = ("constant", "image_mean", "image_min", "data_mean", "blur")
ORDERS = ("least", "most", "random")


def check_attribution(attribution: ArrayLike, x: jax.Array) -> jax.Array:
    """``attribution`` as an array of ``x``'s shape, finite where concrete (named errors)."""
    attribution = jnp.asarray(attribution)
    if attribution.shape != x.shape:
        raise ValueError(f"attribution must have x's shape {x.shape}, got {attribution.shape}")
    check_finite(attribution, "attribution")
    return attribution


def pixel_salience(attribution: ArrayLike, aggregate: str = "abs_sum") -> jax.Array:
    """Per-pixel salience ``[B, H, W]`` of an attribution ``[B, H, W, C]``.

    ``abs_sum``: sum of ``|a|`` over channels; ``std``: standard deviation of the signed
    values over channels; ``sum``: signed sum; ``max_abs``: largest ``|a|``.
    """
    a = jnp.asarray(attribution)
    if a.ndim != 4:
        raise ValueError(f"attribution must have shape [B, H, W, C], got {a.shape}")
    if aggregate == "abs_sum":
        return jnp.sum(jnp.abs(a), axis=-1)
    if aggregate == "std":
        return jnp.std(a, axis=-1)
    if aggregate == "sum":
        return jnp.sum(a, axis=-1)
    if aggregate == "max_abs":
        return jnp.max(jnp.abs(a), axis=-1)
    check_choice(aggregate, AGGREGATES, "aggregate")


TIES = ("stable", "random")


def removal_ranks(
    salience: jax.Array, order: str, key: jax.Array | None = None, *, ties: str = "stable"
) -> jax.Array:
    """``[B, H, W]`` int: the position of each pixel in the removal order (0 goes first).

    ``order``: ``least`` salient first, ``most`` salient first, or ``random`` (needs ``key``).
    ``ties``: how pixels of equal salience are ordered among themselves: ``stable`` keeps
    pixel (raster) order, so the result is deterministic; ``random`` draws their order
    with ``key``, as a ranking that cannot tell them apart implies. It matters where a map
    is exactly 0 on many pixels (gradient x input and IG on a black background): a stable
    order then removes the top rows first.
    """
    check_choice(ties, TIES, "ties")
    check_finite(salience, "salience")
    b = salience.shape[0]
    flat = salience.reshape(b, -1)
    if order in ("least", "most"):
        score = flat if order == "least" else -flat
        if ties == "random":
            if key is None:
                raise ValueError("ties='random' needs key=")
            idx = jnp.lexsort((jax.random.uniform(key, flat.shape), score), axis=1)
        else:
            idx = jnp.argsort(score, axis=1, stable=True)
    elif order == "random":
        if key is None:
            raise ValueError("order='random' needs key=")
        idx = jnp.argsort(jax.random.uniform(key, flat.shape), axis=1)
    else:
        check_choice(order, ORDERS, "order")
    # The inverse permutation, by a sort per row (a scatter would gather a sharded batch).
    ranks = jnp.argsort(idx, axis=1).astype(idx.dtype)
    return ranks.reshape(salience.shape)


def _fill(x, fill, fill_value, data_mean, blur_sigma):
    if fill == "constant":
        return jnp.full_like(x, fill_value)
    if fill == "image_mean":
        return jnp.broadcast_to(jnp.mean(x, axis=(1, 2), keepdims=True), x.shape)
    if fill == "image_min":
        axes = tuple(range(1, x.ndim))
        return jnp.broadcast_to(jnp.min(x, axis=axes, keepdims=True), x.shape)
    if fill == "data_mean":
        if data_mean is None:
            raise ValueError("fill='data_mean' needs data_mean= (an array broadcastable to x[0])")
        return jnp.broadcast_to(jnp.asarray(data_mean, x.dtype), x.shape)
    if fill == "blur":
        radius = int(4.0 * blur_sigma + 0.5)
        return gaussian_blur(x, jnp.asarray(blur_sigma, x.dtype), max(radius, 1))
    check_choice(fill, FILLS, "fill")


def responses(logit_fn: LogitFn, params: Params, target: jax.Array):
    """``evaluate(x, copies) -> (logit, probability, correct)`` of the target.

    For ``_chunking.merged_map``: ``x`` holds ``copies`` batches, the target tiled to match.
    """

    def evaluate(xp, copies):
        logits = logit_fn(params, xp)
        tt = repeat_examples(target, copies)
        logit = select_logits(logits, tt)
        prob = select_logits(jax.nn.softmax(logits, axis=-1), tt)
        correct = (jnp.argmax(logits, axis=-1) == tt).astype(xp.dtype)
        # NaN, not a plausible 0 or 1, where the target is out of range (under jit) or the
        # logits are not finite (a NaN input).
        valid = (tt >= 0) & (tt < logits.shape[-1]) & jnp.all(jnp.isfinite(logits), axis=-1)
        return logit, prob, jnp.where(valid, correct, jnp.nan)

    return evaluate


@checked(
    logit_fn=LOGIT_FN,
    fill_value=FINITE,
    blur_sigma=POSITIVE,
    key=OPTIONAL_KEY,
    chunk_size=OPTIONAL_POSITIVE_INT,
)
def pixel_perturbation(
    logit_fn: LogitFn,
    params: Params,
    x: ArrayLike,
    target: ArrayLike,
    attribution: ArrayLike,
    *,
    fractions=(0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9),
    order: str = "least",
    aggregate: str = "abs_sum",
    fill: str = "constant",
    fill_value: float = 0.0,
    data_mean: ArrayLike | None = None,
    blur_sigma: float = 2.0,
    key: jax.Array | None = None,
    ties: str = "stable",
    chunk_size: int | None = None,
) -> dict[str, jax.Array]:
    """The classifier's response as growing fractions of pixels are removed.

    Args:
      logit_fn: ``(params, x) -> [B, K]``.
      params: the model's params.
      x: ``[B, H, W, C]`` images.
      target: ``[B]`` int, the class whose logit and probability are tracked (and the label
        against which accuracy is counted).
      attribution: ``[B, H, W, C]``, the maps that rank the pixels.
      fractions: the fractions of pixels removed (static).
      order: ``least`` salient first, ``most`` salient first, or ``random`` (needs ``key``).
      aggregate: the per-pixel salience, see :func:`pixel_salience`.
      fill: ``constant`` (``fill_value``), ``image_mean`` (per image and channel),
        ``image_min`` (each image's minimum, Quantus's ``"black"``), ``data_mean``
        (``data_mean``), or ``blur`` (a Gaussian blur of the image with
        ``blur_sigma``, zero-padded).
      key: PRNG key for ``order="random"`` or ``ties="random"``.
      ties: ``stable`` (pixel order) or ``random`` (needs ``key``), see :func:`removal_ranks`.
      chunk_size: fractions evaluated together (static);
        all at once when None. The model sees them as one merged batch of
        ``chunk_size * B`` examples (``logit_fn`` must not depend on the batch size:
        examples independent, the model contract).

    Returns:
      ``{"fractions": [F], "removed": [F] (pixels per image), "logit", "probability",
      "correct", "fractional_change": [F, B]}``, the last being ``|f(x) - f(x~)| / |f(x)|``;
      ``correct`` is NaN where the target is out of range (under ``jit``) or the logits are
      not finite.
    """
    x, target = check_inputs(x, target)
    attribution = check_attribution(attribution, x)
    if x.ndim != 4:
        raise ValueError(f"x must be images [B, H, W, C], got shape {x.shape}")
    f = check_fractions(fractions)
    num_pixels = x.shape[1] * x.shape[2]
    removed = np.rint(f * num_pixels).astype(np.int32)
    ranks = removal_ranks(pixel_salience(attribution, aggregate), order, key, ties=ties)
    ranks = ranks[..., None]
    filler = _fill(x, fill, fill_value, data_mean, blur_sigma)
    f0 = select_logits(logit_fn(params, x), target)

    logit, prob, correct = merged_map(
        lambda count: jnp.where(ranks < count, filler, x),
        responses(logit_fn, params, target),
        jnp.asarray(removed),
        chunk_size,
    )
    return {
        "fractions": jnp.asarray(f, x.dtype),
        "removed": jnp.asarray(removed),
        "logit": logit,
        "probability": prob,
        "correct": correct,
        "fractional_change": jnp.abs(f0[None] - logit) / jnp.abs(f0[None]),
    }


@checked(key=OPTIONAL_KEY)
def mask_images(
    x: ArrayLike,
    attribution: ArrayLike,
    fraction: float,
    *,
    order: str = "most",
    aggregate: str = "abs_sum",
    fill_value: ArrayLike = 0.0,
    key: jax.Array | None = None,
    ties: str = "stable",
) -> jax.Array:
    """Removes ``round(fraction * H * W)`` pixels of every image, ranked as pixel perturbation does.

    The building block of ROAR / DiffROAR (``jaxgrad.drivers.roar``): the same ranking as
    :func:`pixel_perturbation` (``order`` and ``aggregate`` mean the same), one fraction.

    Args:
      x: ``[B, H, W, C]`` images.
      attribution: ``[B, H, W, C]``, the maps that rank the pixels.
      fraction: the share of pixels removed, in ``[0, 1]`` (static: it fixes the count).
      order: ``most`` salient first, ``least`` salient first, or ``random`` (needs ``key``).
      aggregate: the per-pixel salience, see :func:`pixel_salience`.
      fill_value: the value of the removed pixels (traced).
      key: PRNG key for ``order="random"`` or ``ties="random"``.
      ties: ``stable`` (pixel order) or ``random`` (needs ``key``), see :func:`removal_ranks`.

    Returns:
      ``[B, H, W, C]``.
    """
    x = jnp.asarray(x)
    check_images(x, "x")
    check_finite(attribution, "attribution")
    attribution = jnp.asarray(attribution)
    if attribution.shape != x.shape:
        raise ValueError(f"attribution must have x's shape {x.shape}, got {attribution.shape}")
    (f,) = check_fractions([fraction], "fraction")
    count = int(np.rint(f * x.shape[1] * x.shape[2]))
    ranks = removal_ranks(pixel_salience(attribution, aggregate), order, key, ties=ties)
    return jnp.where(ranks[..., None] < count, jnp.asarray(fill_value, x.dtype), x)


def area_under_curve(fractions: ArrayLike, values: ArrayLike) -> jax.Array:
    """Trapezoidal area under ``values [F, ...]`` over ``fractions [F]`` (sorted ascending)."""
    f = jnp.asarray(fractions)
    v = jnp.asarray(values)
    if f.ndim != 1 or f.shape[0] < 2:
        raise ValueError(f"fractions must be 1-D with at least 2 points, got shape {f.shape}")
    if v.ndim < 1 or v.shape[0] != f.shape[0]:
        raise ValueError(
            f"values must have the fractions' length {f.shape[0]} in its first axis [F, ...], "
            f"got shape {v.shape}"
        )
    if is_concrete(f) and not np.all(np.diff(np.asarray(f)) >= 0):
        raise ValueError(f"fractions must be sorted ascending, got {np.asarray(f).tolist()}")
    widths = (f[1:] - f[:-1]).reshape(-1, *([1] * (v.ndim - 1)))
    return jnp.sum(widths * (v[1:] + v[:-1]) / 2, axis=0)


MODES = ("deletion", "insertion")


@checked(
    logit_fn=LOGIT_FN,
    num_steps=OPTIONAL_POSITIVE_INT,
    fill_value=FINITE,
    blur_sigma=POSITIVE,
    key=OPTIONAL_KEY,
    chunk_size=OPTIONAL_POSITIVE_INT,
)
def deletion_insertion(
    logit_fn: LogitFn,
    params: Params,
    x: ArrayLike,
    target: ArrayLike,
    attribution: ArrayLike,
    *,
    mode: str = "deletion",
    num_steps: int | None = None,
    aggregate: str = "abs_sum",
    fill: str | None = None,
    fill_value: float = 0.0,
    data_mean: ArrayLike | None = None,
    blur_sigma: float = 5.0,
    ties: str = "stable",
    key: jax.Array | None = None,
    chunk_size: int | None = None,
) -> dict[str, jax.Array]:
    """Deletion and insertion curves and their areas (Petsiuk et al. 2018, RISE).

    Deletion removes the most salient pixels first, ``W`` pixels per step (RISE's step of one
    image row), and tracks the target's softmax probability: a faithful map makes it fall
    fast (lower area is better). Insertion starts from a blurred copy of the image (RISE's
    substrate) and puts the original pixels back, most salient first: a faithful map makes
    the probability rise fast (higher area is better). The curve's area is the trapezoidal
    rule over the fraction of pixels, in ``[0, 1]``.

    Args:
      logit_fn: ``(params, x) -> [B, K]``.
      params: the model's params.
      x: ``[B, H, W, C]`` images.
      target: ``[B]`` int.
      attribution: ``x``'s shape, the maps that rank the pixels.
      mode: ``deletion`` or ``insertion``.
      num_steps: the curve has ``num_steps + 1`` points, from 0 to every pixel (static);
        ``H`` when None (``W`` pixels per step, as RISE).
      aggregate: the per-pixel salience, see :func:`pixel_salience`.
      fill: the substrate, as in :func:`pixel_perturbation`; by default RISE's: ``constant``
        0 for deletion, ``blur`` (``blur_sigma`` 5, RISE's ``sigma``) for insertion.
      fill_value: the constant of ``fill="constant"``.
      data_mean: the array of ``fill="data_mean"``.
      blur_sigma: the blur's standard deviation in pixels (static); RISE uses 5 with a kernel
        cut at 11 pixels, jaxgrad's blur keeps 4 standard deviations.
      ties: ``stable`` or ``random`` (needs ``key``), see :func:`removal_ranks`.
      key: PRNG key for ``ties="random"``.
      chunk_size: curve points evaluated together (static);
        all at once when None. The model sees them as one merged batch of
        ``chunk_size * B`` examples (``logit_fn`` must not depend on the batch size:
        examples independent, the model contract).

    Returns:
      ``{"fractions": [F], "changed": [F] (pixels per image), "probability", "logit",
      "correct": [F, B], "auc": [B]}`` with ``F = num_steps + 1``; ``fractions`` and
      ``changed`` count the pixels deleted (deletion) or inserted (insertion); ``auc`` is
      the area under the probability curve. ``correct`` is NaN where the target is out of
      range (under ``jit``) or the logits are not finite.
    """
    check_choice(mode, MODES, "mode")
    x, target = check_inputs(x, target)
    check_images(x, "x")
    attribution = check_attribution(attribution, x)
    num_pixels = x.shape[1] * x.shape[2]
    num_steps = x.shape[1] if num_steps is None else check_positive_int(num_steps, "num_steps")
    if num_steps > num_pixels:
        raise ValueError(f"num_steps must be at most H * W = {num_pixels}, got {num_steps}")
    if fill is None:
        fill = "constant" if mode == "deletion" else "blur"
    f = np.linspace(0.0, 1.0, num_steps + 1)
    counts = np.rint(f * num_pixels).astype(np.int32)
    ranks = removal_ranks(pixel_salience(attribution, aggregate), "most", key, ties=ties)
    ranks = ranks[..., None]
    substrate = _fill(x, fill, fill_value, data_mean, blur_sigma)
    start, end = (x, substrate) if mode == "deletion" else (substrate, x)

    logit, prob, correct = merged_map(
        lambda count: jnp.where(ranks < count, end, start),
        responses(logit_fn, params, target),
        jnp.asarray(counts),
        chunk_size,
    )
    fractions = jnp.asarray(counts / num_pixels, x.dtype)
    return {
        "fractions": fractions,
        "changed": jnp.asarray(counts),
        "probability": prob,
        "logit": logit,
        "correct": correct,
        "auc": area_under_curve(fractions, prob),
    }
