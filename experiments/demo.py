"""``make demo``: a tour of the papers' headline results on the offline digits, in minutes.

Trains the config's classifier (checkpoints in ``workdir/checkpoints``: a rerun resumes), then
shows, each part with its own figure in ``report.md``:

1. **Shift manipulation** (Srinivas & Fleuret 2021, Sec. 3): adding ``g(x)`` to every logit
   leaves the softmax unchanged and replaces the gradients of the class by any pattern.
2. **Score matching** (same paper, Eq. 4): a smooth CNN trained with cross-entropy alone and
   with the score-matching regularizer (same initialisation, same batches); their Hessian
   traces, density-ratio profiles and gradients side by side.
3. **Sanity checks** (Adebayo et al. 2018; Sundararajan & Taly's note): cascading
   randomization with the signed, absolute and ``spearman_nz`` rank correlations.
4. **Attribution methods side by side** on the same images, and pixel perturbation (accuracy
   as the most salient pixels are replaced by the training mean, against a random order).

Writes ``config.json``, ``metrics.jsonl``, ``results.json``, ``input_gradients.png``,
``shift.png``, ``score_matching.png``, ``score_matching_gradients.png``, ``sanity.png``,
``sanity_maps.png``, ``methods.png``, ``perturbation.png`` and ``report.md`` into
``--workdir``; the score-matching pair's checkpoints and metrics go to ``score_matching/``.

  python -m experiments.demo --config=experiments/configs/demo.py --workdir=runs/demo
"""

from __future__ import annotations

import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from experiments import fullgrad, report, reports, sanity_checks
from experiments.common import (
    Purpose,
    global_mean,
    launch,
    load_splits,
    make_model,
    override,
    purpose_key,
    train_classifier,
    train_model,
)
from experiments.score_matching import objective_loss
from experiments.shift_manipulation import target_map
from jaxgrad import sharding as shd
from jaxgrad.data import eval_batches
from jaxgrad.drivers import attribute_dataset, sanity_table
from jaxgrad.evaluation import (
    area_under_curve,
    density_ratio_profile,
    pixel_perturbation,
)
from jaxgrad.gradients import cosine_similarity, input_gradients, select_logits, shift_to_target_map
from jaxgrad.trace_estimators import hessian_trace_exact


def sanity_methods(s) -> dict:
    """The ``sanity`` section's methods (``experiments.sanity_checks``'), settings bound."""
    available = sanity_checks.attribution_methods(s)
    unknown = [m for m in s.methods if m not in available]
    if unknown:
        raise ValueError(f"sanity.methods: unknown {unknown}; use any of {sorted(available)}")
    return {m: available[m] for m in s.methods}


def shown_indices(labels: np.ndarray, n: int) -> np.ndarray:
    """The first test image of each class in class order, then the next of each, ``n`` in all."""
    order = np.argsort(labels, kind="stable")
    rank = np.empty(len(labels), np.int64)  # the image's rank within its class
    for c in np.unique(labels):
        members = order[labels[order] == c]
        rank[members] = np.arange(len(members))
    return np.lexsort((labels, rank))[:n]


def check_config(config, sample: np.ndarray) -> None:
    """Refuses sections the tour would fail on late, naming the key; nothing is trained."""
    if not config.evaluation.methods:
        raise ValueError("evaluation.methods is empty: name at least one method")
    fullgrad.check_evaluation(config, sample)  # methods, ties, Grad-CAM's layer
    sanity_methods(config.sanity)
    k = config.data.num_classes
    if not 0 <= config.shift.target_class < k:
        raise ValueError(f"shift.target_class must be in [0, {k}), got {config.shift.target_class}")
    objectives = ("score_matching", "anti_score_matching", "gradient_norm")
    if config.score_matching.objective not in objectives:
        raise ValueError(
            f"score_matching.objective must be one of {objectives}, "
            f"got {config.score_matching.objective!r}"
        )
    try:
        target_map(config.shift.target_map, (8, 8, 1))
    except ValueError as e:
        raise ValueError(f"shift.{e}") from None


def shift_part(config, trained, x, y, shown) -> tuple[dict, dict]:
    """The closed-form shift ``f + g``, ``g(x) = <m, x> - f_c(x)``: same softmax, class c's gradient m."""
    s = config.shift
    m = jnp.asarray(target_map(s.target_map, x.shape[1:]))
    lf, v = trained.logit_fn, trained.variables
    shifted = shift_to_target_map(lf, s.target_class, m)
    p0 = jax.nn.softmax(jax.jit(lf)(v, x))
    p1 = jax.nn.softmax(jax.jit(shifted)(v, x))
    c = jnp.full_like(y, s.target_class)
    grads = jax.jit(input_gradients, static_argnums=0)
    before, after = grads(lf, v, x, c), grads(shifted, v, x, c)
    out = {
        "target_class": int(s.target_class),
        "softmax_max_abs_diff": float(jnp.max(jnp.abs(p1 - p0))),
        "same_predictions": bool(jnp.all(jnp.argmax(p1, -1) == jnp.argmax(p0, -1))),
        "cosine_to_map_before": float(jnp.mean(cosine_similarity(before, m))),
        "cosine_to_map_after": float(jnp.mean(cosine_similarity(after, m))),
        "gradient_max_abs_error": float(jnp.max(jnp.abs(after - m[None]))),
        "images": int(len(y)),
    }
    return out, {"before": before[shown], "after": after[shown], "target_map": m}


def score_matching_part(config, train, test, workdir, mesh, shown, y_shown) -> tuple[dict, dict]:
    """The smooth CNN trained with cross-entropy and with the regularizer, measured side by side.

    Returns the measurements and the label gradients of both models on ``shown``.
    """
    sm = config.score_matching
    model = make_model(sm.model, config.data.num_classes)
    section = override(config.train, **sm.train)
    # A paired comparison: one initialisation, one batch order; the objective the only change.
    key = purpose_key(config.seed, Purpose.MODEL, 1)
    x = jnp.asarray(test["image"])
    y = jnp.asarray(test["label"])
    d = sm.density_ratio
    out, maps = {}, {}
    for objective in ("none", sm.objective):
        print(f"score matching part: training with objective {objective!r}", flush=True)
        trained = train_model(
            model,
            objective_loss(config, model, objective),
            train,
            section,
            key=key,
            test=test,
            mesh=mesh,
            checkpoint_dir=workdir / "score_matching" / objective / "checkpoints",
            metrics_path=workdir / "score_matching" / objective / "metrics.jsonl",
        )
        lf, v = trained.logit_fn, shd.to_host(trained.variables)
        t = sm.trace_images
        trace = jax.jit(
            lambda v, xx, yy, lf=lf: hessian_trace_exact(
                lambda z: select_logits(lf(v, z), yy), xx, chunk_size=8
            )
        )(v, x[:t], y[:t])
        ratio = jax.jit(
            lambda v, xx, yy, k, lf=lf: density_ratio_profile(
                lf, v, xx, yy, key=k, sigmas=d.sigmas, num_samples=d.num_samples, chunk_size=4
            )
        )(v, x[: d.num_images], y[: d.num_images], purpose_key(config.seed, Purpose.DENSITY_NOISE))
        out[objective] = {
            "test_accuracy": trained.test_metrics["accuracy"],
            "hessian_trace_mean": float(jnp.mean(trace)),
            "hessian_trace_median": float(jnp.median(trace)),
            "density_ratio": [float(r) for r in jnp.mean(ratio, axis=1)],
            "density_ratio_median": [float(r) for r in jnp.median(ratio, axis=1)],
        }
        maps[objective] = jax.jit(input_gradients, static_argnums=0)(lf, v, shown, y_shown)
    out["sigmas"] = [float(s) for s in d.sigmas]
    out["objective"] = sm.objective
    out["trace_images"] = int(sm.trace_images)
    out["density_ratio_images"] = int(min(d.num_images, len(y)))
    return out, maps


def sanity_part(config, trained, x, y) -> tuple[dict, list, jax.Array]:
    """Cascading randomization, output layer first, with the note's three rank correlations.

    Returns the table, the maps of the first 6 images per stage, and those images.
    """
    s = config.sanity
    variables = shd.to_host(trained.variables)
    stages = sanity_checks.cascading_stages(config.seed, trained.model, variables, x[:1], s.stddev)
    methods = sanity_methods(s)
    print(f"sanity part: {len(x)} images x {len(stages)} stages x {len(methods)} methods")
    # One noise key for every stage (SmoothGrad's draws stay the same as the weights change).
    noise = purpose_key(config.seed, Purpose.ATTRIBUTION_NOISE, 0, 2)
    rows = sanity_table(methods, trained.logit_fn, stages, x, y, key=noise)
    shown = "integrated_gradients" if "integrated_gradients" in methods else next(iter(methods))
    fn = jax.jit(lambda v, m=methods[shown]: m(trained.logit_fn, v, x[:6], y[:6], key=noise))
    maps = [fn(v) for _, v in stages]
    out = {"stages": [name for name, _ in stages], "table": rows, "maps_method": shown}
    return out, maps, x[:6]


def methods_part(config, trained, train, test, shown) -> tuple[dict, dict]:
    """Every method on the same images; pixel perturbation of each, most salient first.

    Each method attributes the predicted class of the first ``perturbation.num_images``
    test images (``attribute_dataset``: sharded batches, a noise key per batch); the maps
    of the images ``shown`` (indices) are returned for the figure.
    """
    e = config.evaluation
    p = e.perturbation
    variables = shd.to_host(trained.variables)
    data = {k: v[: p.num_images] for k, v in test.items()}
    x, y = jnp.asarray(data["image"]), jnp.asarray(data["label"])
    fill = global_mean(train["image"])
    key = purpose_key(config.seed, Purpose.PERTURBATION_ORDER)
    perturb = jax.jit(
        lambda a, order, k: pixel_perturbation(
            trained.logit_fn,
            variables,
            x,
            y,
            a,
            fractions=tuple(p.fractions),
            order=order,
            fill="constant",
            fill_value=fill,
            key=k,
            ties=e.ties,
            chunk_size=2,
        )["correct"],
        static_argnums=1,
    )
    out = {"fractions": [float(f) for f in p.fractions], "fill": fill, "images": int(len(y))}
    maps = {}
    for m, (name, method) in enumerate(fullgrad.attribution_methods(e).items()):
        print(f"methods part: {name} on {len(y)} images", flush=True)
        r = attribute_dataset(
            method,
            trained.logit_fn,
            variables,
            eval_batches(data, e.attribution_batch),
            mesh=trained.mesh,
            key=purpose_key(config.seed, Purpose.ATTRIBUTION_NOISE, m, 1),  # folded per batch
            target_from="predicted",
            num_batches=-(-len(y) // e.attribution_batch),
            progress=False,
        )
        a = jnp.asarray(r.attribution)
        acc = np.asarray(perturb(a, "most", key).mean(axis=1))
        out[name] = {"accuracy": acc.tolist(), "auc": float(area_under_curve(p.fractions, acc))}
        maps[name] = jax.jit(
            lambda v, xx, tt, k, method=method: method(trained.logit_fn, v, xx, tt, key=k)
        )(
            variables,
            jnp.asarray(test["image"][shown]),
            jnp.argmax(trained.logit_fn(variables, jnp.asarray(test["image"][shown])), -1),
            purpose_key(config.seed, Purpose.ATTRIBUTION_NOISE, m, 0),
        )
    acc = np.asarray(perturb(jnp.zeros_like(x), "random", key).mean(axis=1))
    out["random"] = {"accuracy": acc.tolist(), "auc": float(area_under_curve(p.fractions, acc))}
    return out, maps


def run(config, workdir: str | Path) -> dict:
    """Runs the tour with ``config`` into ``workdir`` and returns the results dict."""
    t_start = time.perf_counter()
    train, test = load_splits(config.data)
    check_config(config, test["image"][:1])
    workdir = report.workdir_path(workdir)
    report.write_config(workdir, config)
    trained = train_classifier(config, train, test, workdir)
    seconds = {"classifier": time.perf_counter() - t_start}
    shown = shown_indices(test["label"], config.evaluation.num_images)
    variables = trained.variables
    x, y = jnp.asarray(test["image"]), jnp.asarray(test["label"])
    xs, ys = x[shown], y[shown]
    pred = jnp.argmax(jax.jit(trained.logit_fn)(variables, xs), -1)
    grads = jax.jit(input_gradients, static_argnums=0)(trained.logit_fn, variables, xs, pred)

    t = time.perf_counter()
    shift, shift_maps = shift_part(config, trained, x, y, shown)
    seconds["shift"] = time.perf_counter() - t
    t = time.perf_counter()
    sm, sm_maps = score_matching_part(config, train, test, workdir, trained.mesh, xs, ys)
    seconds["score_matching"] = time.perf_counter() - t
    t = time.perf_counter()
    k = config.sanity.num_images
    sanity, sanity_maps, sanity_images = sanity_part(config, trained, x[:k], y[:k])
    seconds["sanity"] = time.perf_counter() - t
    t = time.perf_counter()
    methods, method_maps = methods_part(config, trained, train, test, shown)
    seconds["methods"] = time.perf_counter() - t
    result = trained.test_metrics
    results = {
        "test_accuracy": result["accuracy"],
        "test_loss": result["loss"],
        "num_test": int(result["count"]),
        "steps": int(shd.to_host(trained.state.step)),
        "batch_size": trained.batch_size,
        "devices": trained.mesh.devices.size,
        "shift": shift,
        "score_matching": sm,
        "sanity": sanity,
        "methods": methods,
        "seconds_per_part": seconds,
        "seconds": time.perf_counter() - t_start,
    }
    reports.demo.write(
        workdir,
        config,
        results,
        images=xs,
        labels=ys,
        predictions=pred,
        gradients=grads,
        shift_maps=shift_maps,
        score_matching_maps=sm_maps,
        sanity_images=sanity_images,
        sanity_maps=sanity_maps,
        method_maps=method_maps,
    )
    print(f"the tour took {results['seconds']:.0f} s", flush=True)
    for part, cmd in reports.demo.FULL_SIZE.items():
        print(f"  full size, {part}: {cmd}", flush=True)
    return results


if __name__ == "__main__":
    launch(run, "demo", "Demo config.")
