"""ROAR (Hooker et al. 2019, arXiv 1806.10758) and DiffROAR (Shah, Jain & Netrapalli 2021).

Both judge an attribution by *retraining*: pixels are masked per example according to the
attribution (filled with a constant), a fresh model is trained on the masked training set
and evaluated on the masked test set.

- ROAR removes the fraction ``k`` of most salient pixels; a good attribution makes the
  retrained accuracy drop fast.
- DiffROAR keeps the fraction ``k`` of most salient pixels (top-k) or of least salient
  pixels (bottom-k); the predictive power of a mask is the retrained test accuracy, and
  ``DiffROAR(k) = accuracy(top-k kept) - accuracy(bottom-k kept)``: positive when the
  attribution ranks pixels by their information, about 0 for a random attribution.

The retraining is a callable ``retrain(train, test, key) -> accuracy`` so any model and
schedule can be used; :func:`make_retrainer` builds one on jaxgrad's training (sharded over a
mesh when given).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxgrad.data.base import Dataset
from jaxgrad.evaluation.perturbation import check_fractions, pixel_salience, removal_ranks

KEEPS = ("top", "bottom", "random")


def mask_images(
    images: np.ndarray,
    attributions: np.ndarray,
    fraction: float,
    *,
    keep: str = "top",
    fill_value: float = 0.0,
    aggregate: str = "abs_sum",
    key: jax.Array | None = None,
) -> np.ndarray:
    """Keeps ``round(fraction * H * W)`` pixels of every image and fills the others.

    Args:
      images, attributions: ``[N, H, W, C]``.
      fraction: the share of pixels kept, in ``[0, 1]``.
      keep: ``top`` (most salient), ``bottom`` (least salient) or ``random`` (needs ``key``).
      fill_value: the value of the removed pixels.
      aggregate: per-pixel salience (``jaxgrad.evaluation.pixel_salience``).
      key: PRNG key for ``keep="random"``.

    Returns:
      ``[N, H, W, C]`` numpy, float32.
    """
    images, attributions = np.asarray(images, np.float32), np.asarray(attributions)
    if images.shape != attributions.shape or images.ndim != 4:
        raise ValueError(
            f"images and attributions must both be [N, H, W, C] of one shape, got "
            f"{images.shape} and {attributions.shape}"
        )
    check_fractions([fraction])
    if keep not in KEEPS:
        raise ValueError(f"keep must be one of {KEEPS}, got {keep!r}")
    order = {"top": "most", "bottom": "least", "random": "random"}[keep]
    count = int(np.rint(fraction * images.shape[1] * images.shape[2]))
    kept = _keep(
        jnp.asarray(images),
        jnp.asarray(attributions),
        key,
        jnp.float32(fill_value),
        count=count,
        order=order,
        aggregate=aggregate,
    )
    return np.asarray(kept)


@functools.partial(jax.jit, static_argnames=("count", "order", "aggregate"))
def _keep(x, a, key, fill_value, *, count, order, aggregate):
    ranks = removal_ranks(pixel_salience(a, aggregate), order, key)[..., None]
    return jnp.where(ranks < count, x, fill_value.astype(x.dtype))


def make_retrainer(
    model_factory: Callable[[], object],
    *,
    epochs: int = 5,
    batch_size: int = 128,
    learning_rate: float = 1e-3,
    mesh=None,
) -> Callable[[Dataset, Dataset, jax.Array], float]:
    """``retrain(train, test, key) -> test accuracy`` training a fresh model with Adam.

    Args:
      model_factory: returns a new Linen classifier (e.g. ``lambda: MLP(hidden=(256,))``).
      epochs, batch_size, learning_rate: the schedule (constant learning rate).
      mesh: a data mesh to shard the batches over (``batch_size`` is rounded up to a
        multiple of its size), or None for one device.
    """
    import optax

    from jaxgrad.models import linen_logit_fn
    from jaxgrad.training import classifier_loss, evaluate, make_eval_step, train_for_epochs

    def retrain(train: Dataset, test: Dataset, key: jax.Array) -> float:
        model = model_factory()
        state = train_for_epochs(
            model,
            classifier_loss(model),
            optax.adam(learning_rate),
            train,
            key=key,
            epochs=epochs,
            batch_size=batch_size,
            mesh=mesh,
        )
        eval_step = make_eval_step(linen_logit_fn(model), mesh=mesh)
        n_dev = 1 if mesh is None else mesh.devices.size
        batch = -(-batch_size // n_dev) * n_dev
        return evaluate(eval_step, state.variables, test, batch_size=batch, mesh=mesh)["accuracy"]

    return retrain


def roar(
    train: Dataset,
    test: Dataset,
    train_attributions: np.ndarray,
    test_attributions: np.ndarray,
    *,
    retrain: Callable[[Dataset, Dataset, jax.Array], float],
    key: jax.Array,
    fractions: Sequence[float] = (0.1, 0.3, 0.5, 0.7, 0.9),
    mode: str = "diff_roar",
    fill_value: float = 0.0,
    aggregate: str = "abs_sum",
    seeds: int = 1,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """The ROAR or DiffROAR curve over ``fractions``, retraining once per mask and seed.

    Args:
      train, test: ``{"image", "label"}`` splits.
      train_attributions, test_attributions: the attributions ranking each split's pixels,
        or functions ``seed -> attributions`` for attributions that are themselves random
        (a random control): each seed then gets its own draw and masks, so the spread over
        seeds includes the masks' randomness.
      retrain: ``(train, test, key) -> test accuracy`` (see :func:`make_retrainer`). Seed
        ``s`` retrains every mask with ``fold_in(key, s)``, so within a seed the masks are
        the only difference.
      key: PRNG key.
      fractions: the ``k`` grid.
      mode: ``"diff_roar"`` (top-k kept vs bottom-k kept) or ``"roar"`` (top-k removed).
      fill_value, aggregate: as for :func:`mask_images`.
      seeds: retrainings per mask (Shah et al. use 1 to 3).
      progress: print a line per retraining with its accuracy, the elapsed time and an ETA.

    Returns:
      Accuracies are means over seeds, ``[F]``; ``*_per_seed`` are ``[seeds, F]``.

      DiffROAR: ``fractions``, ``top_k_accuracy``, ``bottom_k_accuracy``, their
      ``*_per_seed``, ``diff_roar`` (the mean over seeds, equal to the mean over all
      top/bottom seed pairs as in Shah et al.'s code), ``diff_roar_pair_std`` (the standard
      deviation over those pairs, their error bar) and ``diff_roar_se`` (the standard error of
      ``diff_roar`` from the seed-to-seed spread, ``sqrt(var_top / S + var_bottom / S)``; NaN
      with one seed).

      ROAR: ``fractions``, ``accuracy`` (after removing the top-k), ``accuracy_per_seed``.
    """
    if mode not in ("diff_roar", "roar"):
        raise ValueError(f"mode must be 'diff_roar' or 'roar', got {mode!r}")
    if isinstance(seeds, bool) or not isinstance(seeds, (int, np.integer)) or seeds < 1:
        raise ValueError(f"seeds must be an integer >= 1, got {seeds!r}")
    f = check_fractions(fractions)
    kw = dict(fill_value=fill_value, aggregate=aggregate)
    if mode == "roar":  # removing the top-k = keeping the bottom 1 - k
        masks = [(1.0 - k, "bottom") for k in f]
    else:
        masks = [(k, "top") for k in f] + [(k, "bottom") for k in f]
    per_seed = callable(train_attributions) or callable(test_attributions)

    def masked_splits(i, attributions):
        fraction, keep = masks[i]
        out = []
        for data, a in zip((train, test), attributions, strict=True):
            image = mask_images(data["image"], a, fraction, keep=keep, **kw)
            out.append({"image": image, "label": data["label"]})
        return out

    # Fixed attributions: mask once, retrain every seed. Per-seed ones: new masks per seed.
    if per_seed:
        order = [(i, s) for s in range(seeds) for i in range(len(masks))]
    else:
        order = [(i, s) for i in range(len(masks)) for s in range(seeds)]
    total, done, cached_id, drawn = len(order), 0, None, (None, None)
    t0 = time.perf_counter()
    acc = np.zeros((len(masks), seeds))
    for i, s in order:
        fraction, keep = masks[i]
        mask_id = (i, s if per_seed else 0)
        if mask_id != cached_id:
            if drawn[0] != s:  # each seed's attributions are drawn once, for all its masks
                pair = (train_attributions, test_attributions)
                drawn = (s, [a(s) if callable(a) else a for a in pair])
            cached_id, (tr, te) = mask_id, masked_splits(i, drawn[1])
        acc[i, s] = float(retrain(tr, te, jax.random.fold_in(key, s)))
        done += 1
        if progress:
            elapsed = time.perf_counter() - t0
            eta = elapsed / done * (total - done)
            print(
                f"{mode}: k={fraction:.2f} keep {keep} seed {s}: accuracy {acc[i, s]:.4f} "
                f"[{done}/{total}, {elapsed:.0f} s, ETA {eta:.0f} s]",
                flush=True,
            )
    if mode == "roar":
        return {"fractions": f, "accuracy": acc.mean(1), "accuracy_per_seed": acc.T}
    top, bottom = acc[: len(f)].T, acc[len(f) :].T  # [seeds, F]
    pairs = (top[:, None, :] - bottom[None, :, :]).reshape(-1, len(f))
    if seeds > 1:
        se = np.sqrt(top.var(0, ddof=1) / seeds + bottom.var(0, ddof=1) / seeds)
    else:
        se = np.full(len(f), np.nan)
    return {
        "fractions": f,
        "top_k_accuracy": top.mean(0),
        "bottom_k_accuracy": bottom.mean(0),
        "top_k_accuracy_per_seed": top,
        "bottom_k_accuracy_per_seed": bottom,
        "diff_roar": top.mean(0) - bottom.mean(0),
        "diff_roar_pair_std": pairs.std(0),
        "diff_roar_se": se,
    }
