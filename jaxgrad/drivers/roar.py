"""ROAR (Hooker et al. 2019, arXiv 1806.10758) and DiffROAR (Shah, Jain & Netrapalli 2021).

Both judge an attribution by *retraining*: pixels are masked per example according to the
attribution (filled with a constant, or imputed from their neighbours with ROAD's noisy
linear imputation, ``imputation="road"``), a fresh model is trained on the masked training
set and evaluated on the masked test set.

- ROAR removes the fraction ``k`` of most salient pixels; a good attribution makes the
  retrained accuracy drop fast.
- DiffROAR keeps the fraction ``k`` of most salient pixels (top-k) or of least salient
  pixels (bottom-k); the predictive power of a mask is the retrained test accuracy, and
  ``DiffROAR(k) = accuracy(top-k kept) - accuracy(bottom-k kept)``: positive when the
  attribution ranks pixels by their information, about 0 for a random attribution.

The masks rank pixels as pixel perturbation does (``jaxgrad.evaluation.removal_ranks`` of
``pixel_salience``): the top-k kept are the first ``round(k * H * W)`` pixels in
``order="most"``, the bottom-k kept the first in ``order="least"``; ROAR keeps the first
``round((1 - k) * H * W)`` in ``order="least"`` (the top-k removed). The retraining is a callable
``retrain(train, test, key) -> accuracy`` so any model and schedule can be used;
:func:`make_retrainer` builds one on jaxgrad's training (sharded over a mesh when given).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxgrad._validation import (
    CALLABLE,
    FRACTION,
    KEY,
    NONNEGATIVE,
    NONNEGATIVE_INT,
    OPTIONAL_KEY,
    POSITIVE,
    POSITIVE_INT,
    check_choice,
    check_finite,
    check_fractions,
    check_images,
    check_number,
    check_positive_int,
    checked,
    integer,
    number,
    one_of,
)
from jaxgrad.data.base import Dataset
from jaxgrad.data.iterators import eval_batches
from jaxgrad.evaluation.perturbation import ORDERS, TIES, pixel_salience, removal_ranks
from jaxgrad.evaluation.road import noisy_linear_imputation
from jaxgrad.models.adapters import linen_logit_fn
from jaxgrad.paths import as_path
from jaxgrad.training.logging import Progress
from jaxgrad.training.loop import epoch_steps, train_for_epochs, train_seeds_for_epochs
from jaxgrad.training.losses import classifier_loss
from jaxgrad.training.optim import make_optimizer, make_schedule
from jaxgrad.training.state import evaluate, make_eval_step

PROTOCOLS = ("diff_roar", "roar")


UNITS = ("pixel", "coordinate")
IMPUTATIONS = ("constant", "road")


@checked(
    key=OPTIONAL_KEY,
    noise=NONNEGATIVE,
    count=NONNEGATIVE_INT,
    order=one_of(*ORDERS),
    unit=one_of(*UNITS),
    ties=one_of(*TIES),
    imputation=one_of(*IMPUTATIONS),
)
def keep_ranked(
    x,
    attribution,
    fill_value,
    key=None,
    noise=0.01,
    *,
    count,
    order,
    aggregate="abs_sum",
    unit="pixel",
    ties="stable",
    imputation="constant",
):
    """Keeps the first ``count`` pixels (or coordinates) of each image in ``order``.

    The masking of :func:`roar`: ``x, attribution: [B, H, W, C]``; the others are set to
    ``fill_value`` (``imputation="constant"``) or imputed by ROAD's noisy linear imputation
    (``imputation="road"``, noise std ``noise``, drawn from ``key``;
    ``jaxgrad.evaluation.noisy_linear_imputation``), which leaves no constant-valued shape
    for a retrained model to read. ``unit="coordinate"`` ranks each channel by
    ``|attribution|`` on its own (``aggregate`` is then unused). ``ties="random"`` orders
    equal values at random with ``key`` (``jaxgrad.evaluation.removal_ranks``).
    """
    x, attribution = jnp.asarray(x), jnp.asarray(attribution)
    check_images(x, "x")
    if attribution.shape != x.shape:
        raise ValueError(f"attribution must have x's shape {x.shape}, got {attribution.shape}")
    check_finite(attribution, "attribution")
    units = x.shape[1] * x.shape[2] * (x.shape[3] if unit == "coordinate" else 1)
    if count > units:
        raise ValueError(f"count must be at most the {unit}s per image ({units}), got {count}")
    return _keep_ranked(
        x, attribution, jnp.asarray(fill_value), key, noise, count=count, order=order,
        aggregate=aggregate, unit=unit, ties=ties, imputation=imputation,
    )  # fmt: skip


_STATIC = ("count", "order", "aggregate", "unit", "ties", "imputation")
# Ahead-of-time lowering (compiled_cost, dry runs) of the whole checked function.
keep_ranked.lower = jax.jit(keep_ranked, static_argnames=_STATIC).lower


# Compiled once per (count, order, aggregate, unit, ...), reused for every data set and seed.
@functools.partial(jax.jit, static_argnames=_STATIC)
def _keep_ranked(
    x, attribution, fill_value, key, noise, *, count, order, aggregate, unit, ties, imputation
):
    kept = _kept(x, attribution, key, count, order, aggregate, unit, ties)
    if imputation == "road":
        if key is None:  # no key, no noise
            return noisy_linear_imputation(x, ~kept, noise=0.0)
        return noisy_linear_imputation(x, ~kept, key=_road_key(key), noise=noise)
    return jnp.where(kept, x, fill_value.astype(x.dtype))


def _road_key(key):
    return jax.random.fold_in(key, 0x524F4144)  # "ROAD": not the ties' draw


def _kept(x, attribution, key, count, order, aggregate, unit, ties):
    """``[B, H, W, C]`` bool: the first ``count`` pixels (coordinates) in ``order``."""
    if unit == "coordinate":  # every channel of every pixel ranked on its own: |a|
        b, h, w, c = x.shape
        ranks = removal_ranks(jnp.abs(attribution).reshape(b, h, w * c), order, key, ties=ties)
        ranks = ranks.reshape(b, h, w, c)
    else:
        salience = pixel_salience(attribution, aggregate)
        ranks = removal_ranks(salience, order, key, ties=ties)[..., None]
    return jnp.broadcast_to(ranks < count, x.shape)


_kept_jit = jax.jit(_kept, static_argnums=(3, 4, 5, 6, 7))
_impute_jit = jax.jit(noisy_linear_imputation)


@checked(
    model_factory=CALLABLE,
    epochs=POSITIVE_INT,
    batch_size=POSITIVE_INT,
    learning_rate=POSITIVE,
    optimizer=one_of("sgd", "adam", "adamw"),
    schedule=one_of("constant", "multistep", "cosine"),
    weight_decay=NONNEGATIVE,
    momentum=FRACTION,
    gamma=number(0, 1, low_open=True),
    max_steps=integer(0, optional=True),
)
def make_retrainer(
    model_factory: Callable[[], object],
    *,
    epochs: int = 5,
    batch_size: int = 128,
    learning_rate: float = 1e-3,
    optimizer: str = "adam",
    schedule: str = "constant",
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    milestones: Sequence[int] = (),
    gamma: float = 0.1,
    augment: Callable[[jax.Array, jax.Array], jax.Array] | None = None,
    mesh=None,
    host_local: bool = False,
    max_steps: int | None = None,
) -> Callable[[Dataset, Dataset, jax.Array], float]:
    """``retrain(train, test, key) -> test accuracy`` training a fresh classifier.

    ``retrain.together(train, test, keys [S]) -> [S]`` gives the ``S`` accuracies: on one
    device (``mesh`` None or of one device) the ``S`` models are trained together in one
    compiled program (``jaxgrad.training.train_seeds_for_epochs``), each as ``retrain``
    with its own key would train it; on several devices, one after another. :func:`roar`
    retrains a fixed mask's seeds this way.

    Args:
      model_factory: returns a new Linen classifier (e.g. ``lambda: MLP(hidden=(256,))``).
      epochs, batch_size: the schedule's length and the global batch size.
      learning_rate, optimizer, schedule, weight_decay: as for
        ``jaxgrad.training.make_optimizer`` and ``make_schedule`` (Adam with a constant
        learning rate by default).
      momentum: SGD's momentum.
      milestones, gamma: the ``multistep`` schedule's epochs (scaled by ``gamma`` at each).
      augment: ``(key, images) -> images`` applied to each training batch (e.g.
        ``jaxgrad.data.cifar_augment``), or None.
      mesh: a data mesh to shard the batches over (``batch_size`` is rounded up to a
        multiple of its size), or None for one device.
      host_local: the training splits given to ``retrain`` are this process's shards
        (``jaxgrad.training.fit``'s ``host_local``); the test splits are whole.
      max_steps: stop each retraining after this many steps (the schedule stays the
        epochs'); None trains every epoch.
    """

    def optimizer_for(n):
        batch, total = epoch_steps(n, epochs=epochs, batch_size=batch_size, mesh=mesh)
        per_epoch = total // epochs
        lr = make_schedule(
            schedule,
            learning_rate,
            total_steps=total,
            milestones=[m * per_epoch for m in milestones],
            gamma=gamma,
        )
        return batch, make_optimizer(optimizer, lr, momentum=momentum, weight_decay=weight_decay)

    def retrain_one(train: Dataset, test: Dataset, key: jax.Array) -> float:
        model = model_factory()
        n = len(train["label"]) * (jax.process_count() if host_local else 1)
        batch, tx = optimizer_for(n)
        state = train_for_epochs(
            model,
            classifier_loss(model, augment=augment),
            tx,
            train,
            key=key,
            epochs=epochs,
            batch_size=batch_size,
            mesh=mesh,
            host_local=host_local,
            max_steps=max_steps,
        )
        eval_step = make_eval_step(linen_logit_fn(model), mesh=mesh)
        return evaluate(eval_step, state.variables, test, batch_size=batch, mesh=mesh)["accuracy"]

    def retrain_together(train: Dataset, test: Dataset, keys: jax.Array) -> np.ndarray:
        model = model_factory()
        batch, tx = optimizer_for(len(train["label"]))
        state = train_seeds_for_epochs(
            model,
            classifier_loss(model, augment=augment),
            tx,
            train,
            keys=keys,
            epochs=epochs,
            batch_size=batch_size,
            max_steps=max_steps,
        )
        eval_step = jax.jit(jax.vmap(make_eval_step(linen_logit_fn(model)), in_axes=(0, None)))
        correct = count = 0.0
        for b in eval_batches(test, batch):
            sums = eval_step(state.variables, b)
            correct, count = correct + sums["correct"], count + sums["count"]
        return np.asarray(correct, np.float64) / np.asarray(count, np.float64)

    def retrain(train: Dataset, test: Dataset, key: jax.Array) -> float:
        return retrain_one(train, test, key)

    def together(train: Dataset, test: Dataset, keys: jax.Array) -> np.ndarray:
        keys = jnp.asarray(keys)
        if keys.ndim != 1 or not jax.dtypes.issubdtype(keys.dtype, jax.dtypes.prng_key):
            raise ValueError(
                f"keys must be a 1-D array of PRNG keys [S], got {keys.dtype} {keys.shape}"
            )
        if (mesh is None or mesh.devices.size == 1) and not host_local:
            return retrain_together(train, test, keys)
        return np.array([retrain_one(train, test, k) for k in keys])

    retrain.together = together
    return retrain


def _masked(
    data: Dataset,
    attribution,
    k: float,
    order: str,
    fill_value,
    aggregate,
    unit="pixel",
    ties="stable",
    key=None,
    imputation="constant",
    noise=0.01,
    chunk=4096,
) -> Dataset:
    x, a = np.asarray(data["image"], np.float32), np.asarray(attribution)
    if a.shape != x.shape:
        raise ValueError(
            f"train_attribution / test_attribution must have their split's image shape "
            f"{x.shape}, got {a.shape}"
        )
    if not np.isfinite(a).all():
        bad = np.flatnonzero(~np.isfinite(a.reshape(len(a), -1)).all(axis=1))
        raise ValueError(
            f"attributions contain NaN or infinite values in {len(bad)} image(s), first at "
            f"index {bad[0]}"
        )
    units = x.shape[1] * x.shape[2] * (x.shape[3] if unit == "coordinate" else 1)
    count = int(np.rint(k * units))
    options = dict(count=count, order=order, aggregate=aggregate, unit=unit, ties=ties)
    if imputation == "constant":  # one call: the whole split
        # (x and a were checked above: the jitted masking directly, no second host copy)
        kept = _keep_ranked(
            x, a, jnp.float32(fill_value), key, 0.0, imputation="constant", **options
        )
        return {"image": np.asarray(kept), "label": data["label"]}
    # The masks of the whole split (the constant fill's, ties included), then ROAD's
    # imputation in chunks of images (its solver holds a few copies of its input).
    kept = np.asarray(_kept_jit(x, a, key, count, order, aggregate, unit, ties))
    parts = []
    for c, i in enumerate(range(0, len(x), chunk)):
        removed = jnp.asarray(~kept[i : i + chunk])
        if key is None:
            parts.append(np.asarray(_impute_jit(x[i : i + chunk], removed, noise=0.0)))
        else:
            k_c = jax.random.fold_in(_road_key(key), c)
            parts.append(
                np.asarray(
                    _impute_jit(x[i : i + chunk], removed, key=k_c, noise=jnp.float32(noise))
                )
            )
    return {"image": np.concatenate(parts), "label": data["label"]}


def _fingerprint(attributions, settings) -> str:
    """A digest of a curve's inputs: the attributions (a strided sample) and its settings."""
    h = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for a in attributions:
        a = np.ascontiguousarray(a)
        h.update(str((a.shape, a.dtype)).encode())
        h.update(a.ravel()[:: max(a.size // 4096, 1)].tobytes())
    return h.hexdigest()


def _read_record(record, fingerprint: str) -> dict[str, float]:
    """The finished retrainings of a record of the same curve; {} for another curve's."""
    if record is None:
        return {}
    path = as_path(record)
    if not path.exists():
        return {}
    saved = json.loads(path.read_text())
    if saved.get("fingerprint") != fingerprint:
        print(f"roar: {path} belongs to other attributions or settings; starting over")
        return {}
    return saved["accuracy"]


def _write_record(record, fingerprint: str, finished: dict[str, float]) -> None:
    if jax.process_index() == 0:
        path = as_path(record)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"fingerprint": fingerprint, "accuracy": finished}, indent=1))


@checked(
    retrain=CALLABLE,
    key=KEY,
    protocol=one_of(*PROTOCOLS),
    fill_value=number(),
    imputation=one_of(*IMPUTATIONS),
    imputation_noise=NONNEGATIVE,
    unit=one_of(*UNITS),
    seeds=POSITIVE_INT,
    ties=one_of(*TIES),
)
def roar(
    train: Dataset,
    test: Dataset,
    train_attribution: np.ndarray | Callable[[int], np.ndarray],
    test_attribution: np.ndarray | Callable[[int], np.ndarray],
    *,
    retrain: Callable[[Dataset, Dataset, jax.Array], float],
    key: jax.Array,
    fractions: Sequence[float] = (0.1, 0.3, 0.5, 0.7, 0.9),
    protocol: str = "diff_roar",
    fill_value: float = 0.0,
    imputation: str = "constant",
    imputation_noise: float = 0.01,
    aggregate: str = "abs_sum",
    unit: str = "pixel",
    seeds: int = 1,
    ties: str = "stable",
    progress: bool = True,
    record: str | os.PathLike | None = None,
) -> dict[str, np.ndarray]:
    """The ROAR or DiffROAR curve over ``fractions``, retraining once per mask and seed.

    Args:
      train, test: ``{"image", "label"}`` splits.
      train_attribution, test_attribution: the attributions ranking each split's pixels,
        or functions ``seed -> attributions`` for attributions that are themselves random
        (a random control): each seed then gets its own draw and masks, so the spread over
        seeds includes the masks' randomness.
      retrain: ``(train, test, key) -> test accuracy`` (see :func:`make_retrainer`). Seed
        ``s`` retrains every mask with ``fold_in(key, s)``, so within a seed the masks are
        the only difference. A retrainer with a ``together(train, test, keys [S]) -> [S]``
        attribute (as :func:`make_retrainer`'s) gets a fixed mask's seeds in one call.
      key: PRNG key.
      fractions: the ``k`` grid: the share of the most (or least) salient pixels selected.
      protocol: ``"diff_roar"`` (top-k kept vs bottom-k kept) or ``"roar"`` (top-k removed).
      fill_value: the value of the removed pixels (``imputation="constant"``).
      imputation: ``constant`` (``fill_value``, the protocols' own) or ``road``: the removed
        pixels are imputed from their kept neighbours, with Gaussian noise of std
        ``imputation_noise``, ROAD's noisy linear imputation (Rong et al. 2022,
        ``jaxgrad.evaluation.noisy_linear_imputation``). A constant fill draws the mask's
        outline, from which a retrained model can read the class when the masks are
        class-stereotyped; ROAD's imputation leaves no such outline.
      imputation_noise: the noise's standard deviation for ``imputation="road"``.
      aggregate: the per-pixel salience (``jaxgrad.evaluation.pixel_salience``).
      unit: ``"pixel"`` (a pixel's channels are kept or masked together, ranked by
        ``aggregate``) or ``"coordinate"`` (each channel of each pixel ranked by ``|a|`` on
        its own, as Shah et al.'s code does; ``k`` is then a share of the ``H * W * C``
        coordinates).
      seeds: retrainings per mask (Shah et al. use 1 to 3).
      ties: how pixels of equal salience are ranked: ``stable`` (pixel order) or ``random``
        (drawn from ``key``, per split, mask and, for per-seed attributions, seed); see
        ``jaxgrad.evaluation.removal_ranks``. With several processes each host folds in
        its index (its own images).
      progress: print a line per retraining with its accuracy, the rate and an ETA.
      record: a JSON file (local or ``gs://``) that keeps every finished retraining's
        accuracy as it comes; a rerun with the same file skips them, so a preempted curve
        resumes at the retraining it lost. The file carries a digest of the attributions
        (of seed 0 for functions) and of the settings; a record of other attributions (a
        model trained further, say) is ignored and overwritten.

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
    if key is None:
        raise ValueError("roar needs key= (a PRNG key: the retrainings' seeds derive from it)")
    check_choice(protocol, PROTOCOLS, "protocol")
    check_choice(unit, UNITS, "unit")
    check_choice(ties, TIES, "ties")
    check_choice(imputation, IMPUTATIONS, "imputation")
    check_number(imputation_noise, "imputation_noise", low=0.0)
    seeds = check_positive_int(seeds, "seeds")
    f = check_fractions(fractions)
    # (k, label, share of pixels kept, the order they are kept in).
    if protocol == "roar":
        masks = [(k, "top removed", 1.0 - k, "least") for k in f]
    else:
        masks = [(k, "top kept", k, "most") for k in f] + [
            (k, "bottom kept", k, "least") for k in f
        ]
    per_seed = callable(train_attribution) or callable(test_attribution)

    tie_key = jax.random.fold_in(jax.random.fold_in(key, 0x7469), jax.process_index())

    def masked_splits(i, attributions, s):
        _, _, kept, order = masks[i]
        mask_key = jax.random.fold_in(jax.random.fold_in(tie_key, i), s)
        return [
            _masked(
                d,
                a,
                kept,
                order,
                fill_value,
                aggregate,
                unit,
                ties,
                jax.random.fold_in(mask_key, j),
                imputation,
                imputation_noise,
            )
            for j, (d, a) in enumerate(zip((train, test), attributions, strict=True))
        ]

    # Fixed attributions: mask once, retrain every seed. Per-seed ones: new masks per seed.
    if per_seed:
        schedule = [(i, s) for s in range(seeds) for i in range(len(masks))]
    else:
        schedule = [(i, s) for i in range(len(masks)) for s in range(seeds)]
    bar = (
        Progress(len(schedule), name=protocol, unit="retraining", every_seconds=0.0)
        if progress
        else None
    )
    cached_id, drawn = None, (None, None)
    acc = np.zeros((len(masks), seeds))
    fingerprint = ""
    if record is not None:
        first = [a(0) if callable(a) else a for a in (train_attribution, test_attribution)]
        settings = dict(
            protocol=protocol, fractions=f.tolist(), fill=float(fill_value), unit=unit,
            aggregate=aggregate, seeds=seeds, n=(len(train["label"]), len(test["label"])),
        )  # fmt: skip
        if ties != "stable":  # records written before ``ties`` existed stay valid
            settings["ties"] = ties
        if imputation != "constant":  # as for ties
            settings["imputation"] = [imputation, float(imputation_noise)]
        fingerprint = _fingerprint(first, settings)
    finished = _read_record(record, fingerprint)
    # A retrainer that takes key arrays trains a fixed mask's seeds together.
    together = hasattr(retrain, "together") and not per_seed and seeds > 1
    if together:
        groups = [(i, list(range(seeds))) for i in range(len(masks))]
    else:
        groups = [(i, [s]) for i, s in schedule]
    done = 0
    for i, group in groups:
        k, kept = masks[i][:2]
        todo = []
        for s in group:
            name = f"{protocol}/{kept}/k={k:.6g}/seed={s}"
            if name in finished:
                acc[i, s] = finished[name]
                done += 1
            else:
                todo.append(s)
        if not todo:
            continue
        mask_id = (i, todo[0] if per_seed else 0)
        if mask_id != cached_id:
            s0 = todo[0]
            if drawn[0] != s0:  # each seed's attributions are drawn once, for all its masks
                pair = (train_attribution, test_attribution)
                drawn = (s0, [a(s0) if callable(a) else a for a in pair])
            cached_id, (tr, te) = mask_id, masked_splits(i, drawn[1], mask_id[1])
        if together:
            keys = jnp.stack([jax.random.fold_in(key, s) for s in todo])
            accuracies = np.asarray(retrain.together(tr, te, keys)).reshape(len(todo))
        else:
            accuracies = [retrain(tr, te, jax.random.fold_in(key, todo[0]))]
        for s, a in zip(todo, accuracies, strict=True):
            done += 1
            acc[i, s] = float(a)
            if record is not None:
                finished[f"{protocol}/{kept}/k={k:.6g}/seed={s}"] = acc[i, s]
            if bar is not None:
                bar.update(done, {"accuracy": acc[i, s]}, note=f"k={k:.2f} {kept} seed {s}")
        if record is not None:
            _write_record(record, fingerprint, finished)
    if protocol == "roar":
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
