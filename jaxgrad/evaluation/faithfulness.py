"""Faithfulness by random perturbations: infidelity and faithfulness correlation.

Both ask whether an attribution predicts how the model's output moves when the input is
perturbed at random, and both evaluate every perturbation of a batch in one compiled call
(``chunk_size`` perturbations at a time when memory asks for it).

- :func:`infidelity` (Yeh et al. 2019, arXiv 1901.09392), with Captum's definition
  (``captum.metrics.infidelity``): ``E_I[(I . a - (f(x) - f(x - I)))^2]`` over random
  perturbations ``I``, optionally with the optimal rescaling ``beta`` of the attribution
  (``normalize=True``). Lower is better; an exact linear model's gradient scores 0.
- :func:`faithfulness_correlation` (Bhatt et al. 2020, arXiv 2005.00631), with Quantus's
  definition and defaults (``quantus.FaithfulnessCorrelation``): the Pearson correlation,
  over ``num_runs`` random pixel subsets ``S``, between the attribution's sum over ``S`` and
  the drop of the output when ``S`` is set to a baseline. Higher is better.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxgrad import _random
from jaxgrad._chunking import merged_map, repeat_examples
from jaxgrad._validation import (
    BOOL,
    LOGIT_FN,
    OPTIONAL_KEY,
    POSITIVE,
    POSITIVE_INT,
    check_choice,
    check_finite,
    check_images,
    check_inputs,
    check_number,
    check_positive_int,
    checked,
    is_concrete,
)
from jaxgrad.evaluation.perturbation import FILLS, _fill, check_attribution, pixel_salience
from jaxgrad.gradients import select_logits
from jaxgrad.types import ArrayLike, LogitFn, Params

OUTPUTS = ("logit", "probability")
PERTURBATIONS = ("gaussian", "square")


def select_output(logits: jax.Array, target: jax.Array, output: str) -> jax.Array:
    """``[B]``: the target's logit (``output="logit"``) or its softmax probability."""
    if output == "probability":
        logits = jax.nn.softmax(logits, axis=-1)
    else:
        check_choice(output, OUTPUTS, "output")
    return select_logits(logits, target)


@checked(
    logit_fn=LOGIT_FN,
    key=OPTIONAL_KEY,
    num_samples=POSITIVE_INT,
    noise_scale=POSITIVE,
    patch_size=POSITIVE_INT,
    normalize=BOOL,
)
def infidelity(
    logit_fn: LogitFn,
    params: Params,
    x: ArrayLike,
    target: ArrayLike,
    attribution: ArrayLike,
    *,
    key: jax.Array | None,
    num_samples: int = 10,
    perturbation: str = "gaussian",
    noise_scale: ArrayLike = 0.003,
    patch_size: int = 4,
    baseline: ArrayLike = 0.0,
    normalize: bool = False,
    output: str = "logit",
    perturbations: ArrayLike | None = None,
    chunk_size: int | None = None,
) -> jax.Array:
    """Explanation infidelity, Captum's ``infidelity`` on explicit random draws.

    ``infidelity = mean_s (I_s . a - (f(x) - f(x - I_s)))^2`` with ``f`` the target's
    output. With ``normalize=True`` the attribution is first rescaled by the ``beta`` that
    minimises it, ``beta = mean(I.a (f(x) - f(x-I))) / mean((I.a)^2)`` (Captum's
    ``normalize``, the paper's official code), so the score ignores the attribution's scale.

    Args:
      logit_fn: ``(params, x) -> [B, K]``.
      params: the model's params.
      x: ``[B, *S]`` float.
      target: ``[B]`` int.
      attribution: ``x``'s shape.
      key: PRNG key for the perturbations: sample ``s`` draws from
        ``jax.random.split(key, num_samples)[s]``.
      num_samples: perturbations per example (static; Captum's ``n_perturb_samples=10``).
      perturbation: ``gaussian``: ``I ~ N(0, noise_scale^2)`` on every feature, for local
        attributions (gradient, SmoothGrad); Captum has no default perturbation and its
        documented example draws ``N(0, 0.003^2)``, jaxgrad's default. ``square``: a random
        ``patch_size`` square of pixels (all channels) is set to ``baseline``, and ``I`` is
        the binary mask of the square, the perturbation Yeh et al. use for global
        attributions (gradient x input, IG); it is Captum's
        ``infidelity_perturb_func_decorator(multiply_by_inputs=True)``: ``I =
        (x - x~) / (x - baseline)``, the mask where ``x`` differs from the baseline and 0
        where it does not. Needs images ``[B, H, W, C]``.
      noise_scale: the Gaussian's standard deviation (traced).
      patch_size: the side of the square (static).
      baseline: the value a square is set to (a number or an array broadcastable to ``x``).
      normalize: rescale the attribution optimally first (see above).
      output: ``logit`` (default) or ``probability`` (softmax), the ``f`` compared.
      perturbations: optional ``[num_samples, B, *S]`` draws to use instead of random ones
        (the ``I`` of ``gaussian``, the 0/1 masks of ``square``), e.g. to replay another
        library's; then ``key`` and ``num_samples`` are not used.
      chunk_size: perturbations evaluated together (static);
        all at once when None. The model sees them as one merged batch of
        ``chunk_size * B`` examples (``logit_fn`` must not depend on the batch size:
        examples independent, the model contract).

    Returns:
      ``[B]``, lower is better.
    """
    x, target = check_inputs(x, target)
    attribution = check_attribution(attribution, x)
    draws = _draws(key, num_samples, perturbations, x, "infidelity")
    check_choice(perturbation, PERTURBATIONS, "perturbation")
    check_choice(output, OUTPUTS, "output")
    check_number(noise_scale, "noise_scale", low=0.0)
    if perturbation == "square":
        check_images(x, "x")
        patch_size = check_positive_int(patch_size, "patch_size")
        if patch_size > min(x.shape[1], x.shape[2]):
            raise ValueError(f"patch_size must fit in the image {x.shape[1:3]}, got {patch_size}")
        base = jnp.broadcast_to(jnp.asarray(baseline, x.dtype), x.shape)
    f0 = select_output(logit_fn(params, x), target, output)
    sigma = jnp.asarray(noise_scale, x.dtype)
    axes = tuple(range(1, x.ndim))

    def make(k):
        if perturbation == "gaussian":
            pert = k if perturbations is not None else sigma * _random.normal(k, x.shape, x.dtype)
            return pert, x - pert
        if perturbations is not None:
            mask = k
        else:
            mask = _random_squares(k, x.shape, patch_size, x.dtype)
        # Captum's (x - x~) / (x - baseline), 0 where x equals the baseline (nothing moved).
        return mask * (x != base).astype(x.dtype), x - mask * (x - base)

    def evaluate(inputs, copies):
        pert, x_pert = inputs
        a_dot = jnp.sum(repeat_examples(attribution, copies) * pert, axis=axes)
        out = select_output(logit_fn(params, x_pert), repeat_examples(target, copies), output)
        return a_dot, repeat_examples(f0, copies) - out

    a_dot, delta = merged_map(make, evaluate, draws, chunk_size)  # [S, B] each
    if normalize:
        aa, ad, dd = (jnp.mean(v, axis=0) for v in (a_dot * a_dot, a_dot * delta, delta * delta))
        beta = jnp.where(aa == 0, 0.0, ad / jnp.where(aa == 0, 1.0, aa))
        # = dd - ad^2 / aa >= 0 (Cauchy-Schwarz); the clip removes rounding below 0 only.
        return jnp.maximum(beta * beta * aa - 2 * beta * ad + dd, 0.0)
    return jnp.mean((a_dot - delta) ** 2, axis=0)


def _draws(key, num_samples, perturbations, x, name):
    """The per-sample keys, or the given ``perturbations [S, *x.shape]`` checked."""
    if perturbations is None:
        if key is None:
            raise ValueError(f"{name} needs key= (or explicit perturbations=)")
        return jax.random.split(key, check_positive_int(num_samples, "num_samples"))
    p = jnp.asarray(perturbations, x.dtype)
    if p.ndim != x.ndim + 1 or p.shape[1:] != x.shape or not p.shape[0]:
        raise ValueError(
            f"perturbations must have shape [num_samples, *x.shape] = [S, {', '.join(map(str, x.shape))}], "
            f"got {p.shape}"
        )
    check_finite(p, "perturbations")
    return p


def _random_squares(key, shape, size, dtype):
    """``[B, H, W, C]`` 0/1: one ``size x size`` square per example, uniformly placed."""
    b, h, w, _ = shape
    k_row, k_col = jax.random.split(key)
    top = jax.random.randint(k_row, (b, 1, 1), 0, h - size + 1)
    left = jax.random.randint(k_col, (b, 1, 1), 0, w - size + 1)
    rows = jnp.arange(h)[None, :, None]
    cols = jnp.arange(w)[None, None, :]
    inside = (rows >= top) & (rows < top + size) & (cols >= left) & (cols < left + size)
    return inside[..., None].astype(dtype) * jnp.ones(shape, dtype)


def random_subsets(key: jax.Array, num_runs: int, batch: int, num_pixels: int, size: int):
    """``int[num_runs, batch, size]``: uniform subsets of ``range(num_pixels)``, no repeats.

    The ``size`` largest of i.i.d. uniform keys (``top_k``, 4x faster than a full sort).
    """
    u = jax.random.uniform(key, (num_runs * batch * num_pixels,)).reshape(
        num_runs, batch, num_pixels
    )
    return jax.lax.top_k(u, size)[1]


@checked(logit_fn=LOGIT_FN, key=OPTIONAL_KEY, num_runs=POSITIVE_INT, subset_size=POSITIVE_INT)
def faithfulness_correlation(
    logit_fn: LogitFn,
    params: Params,
    x: ArrayLike,
    target: ArrayLike,
    attribution: ArrayLike,
    *,
    key: jax.Array | None = None,
    num_runs: int = 100,
    subset_size: int = 224,
    aggregate: str = "sum",
    fill: str = "image_min",
    fill_value: float = 0.0,
    data_mean: ArrayLike | None = None,
    output: str = "logit",
    subsets: ArrayLike | None = None,
    chunk_size: int | None = None,
) -> jax.Array:
    """Faithfulness correlation (Bhatt et al. 2020), Quantus's definition and defaults.

    For each of ``num_runs`` random subsets ``S`` of ``subset_size`` pixels (drawn
    independently per example), the pixels of ``S`` are replaced by ``fill`` and the drop
    ``f(x) - f(x_S)`` of the target's output is paired with ``sum_{i in S} a_i``; the score
    is their Pearson correlation over the runs. Quantus's defaults: 100 runs, 224 features,
    the baseline ``"black"`` (each image's minimum, ``fill="image_min"``), logits, signed
    attributions.

    Args:
      logit_fn: ``(params, x) -> [B, K]``.
      params: the model's params.
      x: ``[B, H, W, C]`` images.
      target: ``[B]`` int.
      attribution: ``x``'s shape.
      key: PRNG key for the subsets (needed unless ``subsets`` is given).
      num_runs: subsets per example (static).
      subset_size: pixels per subset (static), below ``H * W``; Quantus's 224 suits
        ImageNet-size images (pass e.g. 16 on 8x8 digits).
      aggregate: per-pixel attribution, see :func:`~jaxgrad.evaluation.pixel_salience`
        (``sum``: signed, as Quantus sums the signed attribution; with one channel it is
        the attribution itself).
      fill: what the subset is set to: ``image_min`` (Quantus's ``"black"``), ``constant``
        (``fill_value``), ``image_mean``, ``data_mean`` or ``blur`` (see
        :func:`~jaxgrad.evaluation.pixel_perturbation`).
      fill_value: the constant of ``fill="constant"``.
      data_mean: the array of ``fill="data_mean"``.
      output: ``logit`` (Quantus's ``softmax=False``) or ``probability``.
      subsets: optional ``int[num_runs, B, subset_size]`` flat pixel indices (row-major
        over ``H, W``) to use instead of random ones, e.g. to replay another library's
        draws; then ``key`` is not used.
      chunk_size: runs evaluated together (static);
        all at once when None. The model sees them as one merged batch of
        ``chunk_size * B`` examples (``logit_fn`` must not depend on the batch size:
        examples independent, the model contract).

    Returns:
      ``[B]`` in ``[-1, 1]``; NaN where either side is constant over the runs (the
      correlation is undefined there).
    """
    x, target = check_inputs(x, target)
    check_images(x, "x")
    attribution = check_attribution(attribution, x)
    check_choice(output, OUTPUTS, "output")
    check_choice(fill, FILLS, "fill")
    b, h, w, _ = x.shape
    num_pixels = h * w
    if subsets is None:
        if key is None:
            raise ValueError("faithfulness_correlation needs key= (or explicit subsets=)")
        num_runs = check_positive_int(num_runs, "num_runs")
        subset_size = check_positive_int(subset_size, "subset_size")
        if subset_size >= num_pixels:
            raise ValueError(
                f"subset_size must be below the number of pixels H * W = {num_pixels} (a "
                f"subset of every pixel is the same each run), got {subset_size}; Quantus's "
                "224 is for 224x224 images"
            )
        subsets = random_subsets(key, num_runs, b, num_pixels, subset_size)
    else:
        concrete = np.asarray(subsets) if is_concrete(subsets) else None
        subsets = jnp.asarray(subsets)
        if subsets.ndim != 3 or subsets.shape[1] != b or subsets.shape[2] > num_pixels:
            raise ValueError(
                f"subsets must have shape [num_runs, B={b}, subset_size <= {num_pixels}], got "
                f"{subsets.shape}"
            )
        if not jnp.issubdtype(subsets.dtype, jnp.integer):
            raise TypeError(f"subsets must be integer pixel indices, got dtype {subsets.dtype}")
        if concrete is not None and concrete.size:
            if concrete.min() < 0 or concrete.max() >= num_pixels:
                raise ValueError(
                    f"subsets must hold pixel indices in [0, {num_pixels}), got values in "
                    f"[{concrete.min()}, {concrete.max()}]"
                )
            if any(
                len(np.unique(row)) < len(row) for row in concrete.reshape(-1, concrete.shape[2])
            ):
                raise ValueError("subsets must not repeat a pixel within a subset")
    if subsets.shape[0] < 2:
        raise ValueError(
            f"faithfulness_correlation needs at least 2 runs for a correlation, got {subsets.shape[0]}"
        )
    salience = pixel_salience(attribution, aggregate).reshape(b, num_pixels)
    filler = _fill(x, fill, fill_value, data_mean, 2.0)
    f0 = select_output(logit_fn(params, x), target, output)
    rows = jnp.arange(b)[:, None]

    def make(idx):
        mask = jnp.zeros((b, num_pixels), bool).at[rows, idx].set(True)
        x_pert = jnp.where(mask.reshape(b, h, w, 1), filler, x)
        return jnp.sum(jnp.take_along_axis(salience, idx, axis=1), axis=1), x_pert

    def evaluate(inputs, copies):
        sums, x_pert = inputs
        out = select_output(logit_fn(params, x_pert), repeat_examples(target, copies), output)
        return sums, repeat_examples(f0, copies) - out

    sums, deltas = merged_map(make, evaluate, subsets, chunk_size)  # [R, B] each
    return pearson(sums, deltas, axis=0)


def pearson(a: jax.Array, b: jax.Array, axis: int = 0) -> jax.Array:
    """Pearson correlation along ``axis``; NaN where either side is constant."""
    a = a - jnp.mean(a, axis=axis, keepdims=True)
    b = b - jnp.mean(b, axis=axis, keepdims=True)
    return jnp.sum(a * b, axis=axis) / jnp.sqrt(
        jnp.sum(a * a, axis=axis) * jnp.sum(b * b, axis=axis)
    )
