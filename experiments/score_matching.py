"""Srinivas & Fleuret (2021): the four training objectives compared (MNIST to CIFAR-100 scale).

Cross-entropy alone, + score matching, + anti-score-matching and + gradient norm, compared by
accuracy, Hessian trace, GAN-test, discriminative pixel perturbation and the density-ratio
profile.

Writes ``config.json``, ``results.json``, ``samples.png``, ``gradients.png``, ``curves.png``
and ``report.md`` into ``--workdir``.

  python -m experiments.score_matching --config=experiments/configs/score_matching.py \
      --workdir=runs/score_matching
"""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from experiments import report, reports
from experiments.common import (
    Purpose,
    launch,
    load_splits,
    make_mesh,
    make_model,
    override,
    plan_training,
    purpose_key,
    train_model,
)
from experiments.dry_run import DryRun, abstract_images, abstract_key
from jaxgrad.attribution import gradient
from jaxgrad.data import source_shape
from jaxgrad.evaluation import (
    area_under_curve,
    density_ratio_profile,
    gan_test_accuracy,
    gradient_ascent,
    pixel_perturbation,
)
from jaxgrad.gradients import select_logits
from jaxgrad.models import linen_logit_fn
from jaxgrad.score_matching import PAPER_DEFAULTS
from jaxgrad.trace_estimators import (
    hessian_trace_exact,
    hessian_trace_hutchinson,
    hessian_trace_taylor,
)
from jaxgrad.training import classifier_loss, regularized_classifier_loss


# Compiled once per logit function (the objectives share one) with the params as an
# argument, not a constant baked into each model's program.
@functools.partial(jax.jit, static_argnums=0, static_argnames=("estimator", "draws"))
def _trace_draws(lf, variables, x, y, key, sigma, *, estimator, draws):
    """``[draws, B]`` single-draw estimates of the label logit's Hessian trace.

    ``hutchinson``: one Rademacher probe each (jvp of the gradient); ``taylor``: one
    antithetic pair at ``sigma`` each, ``(f(x + v) + f(x - v) - 2 f(x)) / sigma^2`` (the same
    expectation as the training's one-sided estimate, without its gradient term);
    ``taylor_one_sided``: the training's own single-sample ``2 (f(x + v) - f(x)) / sigma^2``.
    """

    def f(z):
        return select_logits(lf(variables, z), y)

    def one(k):
        if estimator == "hutchinson":
            return hessian_trace_hutchinson(f, x, key=k, num_probes=1)
        antithetic = estimator == "taylor"
        return hessian_trace_taylor(f, x, key=k, sigma=sigma, num_samples=1, antithetic=antithetic)

    return jax.lax.map(one, jax.random.split(key, draws))


@functools.partial(jax.jit, static_argnums=0)
def _trace_exact(lf, variables, x, y):
    """The exact trace (every basis direction, one at a time: memory of one HVP)."""
    return hessian_trace_exact(lambda z: select_logits(lf(variables, z), y), x, chunk_size=1)


def objective_spec(config, objective: str) -> dict:
    """``{"kind", overrides...}`` of an objective: a kind of Eq. 4, or a named variant of one."""
    variants = config.train.get("variants", {})
    if objective in variants:
        return dict(variants[objective])
    return {"kind": objective}


def objective_loss(config, model, objective: str):
    """The training loss of ``objective`` (:func:`objective_spec`)."""
    spec = objective_spec(config, objective)
    kind = spec.pop("kind")
    if spec.pop("estimator", "taylor") == "hutchinson":
        spec["trace_estimator"] = functools.partial(
            hessian_trace_hutchinson, num_probes=spec.pop("num_probes", 1)
        )
    return regularized_classifier_loss(model, kind=kind, **spec)


def training_sigma(config, objective: str) -> float:
    """The sigma of the Taylor estimate the objective trains with (the paper's 0.01 otherwise)."""
    kind = objective_spec(config, objective)["kind"]
    return float(PAPER_DEFAULTS.get(kind, {}).get("sigma", 0.01))


def measure_traces(config, objective, lf, variables, test) -> dict:
    """Exact, Hutchinson and antithetic-Taylor traces on the same images, with standard errors.

    Per image, a stochastic estimator's value is the mean of ``draws`` single draws and its
    standard error their std / sqrt(draws); over images, the mean's standard error is
    ``sqrt(sum se_i^2) / n`` (the images are shared, so only the draws vary). Each estimator's
    difference to the exact mean is given in those standard errors (``z``), with the share of
    images whose own estimate lies within 3 of its standard errors of the exact trace, and a
    bound on the relative error, ``(|difference| + 3 SE) / |exact|`` (a small ``z`` alone
    says little when the standard error is large).
    """
    t = config.evaluation.trace
    if t.draws < 2:
        raise ValueError(f"evaluation.trace.draws must be at least 2 (for the SEs), got {t.draws}")
    n = t.num_images
    x, y = jnp.asarray(test["image"][:n]), jnp.asarray(test["label"][:n])
    key = purpose_key(config.seed, Purpose.TRACE_PROBES)
    sigma = training_sigma(config, objective)
    out = {"num_images": n, "draws": t.draws, "exact": None}
    exact = None
    if t.get("exact", True):
        exact = _chunked(lambda a, b: _trace_exact(lf, variables, a, b), x, y, size=t.chunk)
        out["exact"] = {"mean": float(exact.mean()), "median": float(np.median(exact))}
    for i_est, name in enumerate(("hutchinson", "taylor", "taylor_one_sided")):
        draws = np.concatenate(
            [
                np.asarray(
                    _trace_draws(
                        lf, variables, x[i : i + t.chunk], y[i : i + t.chunk],
                        jax.random.fold_in(jax.random.fold_in(key, i), i_est),
                        sigma, estimator=name, draws=t.draws,
                    )
                )
                for i in range(0, n, t.chunk)
            ],
            axis=1,
        )  # fmt: skip
        per_image = draws.mean(0)
        se_image = draws.std(0, ddof=1) / np.sqrt(t.draws)
        se = float(np.sqrt(np.sum(se_image**2)) / n)
        out[name] = {"mean": float(per_image.mean()), "se": se}
        if exact is not None:
            diff = float(per_image.mean() - exact.mean())
            scale = abs(float(exact.mean()))
            out[name].update(
                difference_to_exact=diff,
                z=diff / se if se > 0 else (0.0 if diff == 0 else float(np.sign(diff)) * 1e9),
                relative_error_bound=(abs(diff) + 3 * se) / scale if scale > 0 else None,
                images_within_3se=float(np.mean(np.abs(per_image - exact) <= 3 * se_image)),
            )
    out["taylor"]["sigma"] = out["taylor_one_sided"]["sigma"] = sigma
    return out


@functools.partial(jax.jit, static_argnums=0, static_argnames="steps")
def _activation_maximisation(lf, variables, x0, target, step_size, weight_decay, *, steps):
    return gradient_ascent(
        lf, variables, x0, target, step_size=step_size, steps=steps, weight_decay=weight_decay
    )


@functools.partial(jax.jit, static_argnums=0)
def _gradient(lf, variables, x, y):
    return gradient(lf, variables, x, y)


@functools.partial(
    jax.jit,
    static_argnums=0,
    static_argnames=("fractions", "order", "aggregate", "fill", "chunk_size"),
)
def _perturbation(
    lf, variables, x, y, attr, key, fill_value, *, fractions, order, aggregate, fill, chunk_size=2
):
    """``correct [F, B]`` of pixel perturbation (``fractions`` a tuple)."""
    return pixel_perturbation(
        lf,
        variables,
        x,
        y,
        attr,
        fractions=fractions,
        order=order,
        aggregate=aggregate,
        fill=fill,
        fill_value=fill_value,
        key=key,
        chunk_size=chunk_size,
    )["correct"]


@functools.partial(jax.jit, static_argnums=0, static_argnames=("num_samples", "chunk_size"))
def _density_ratio(lf, variables, x, y, key, sigmas, *, num_samples, chunk_size=4):
    return density_ratio_profile(
        lf, variables, x, y, key=key, sigmas=sigmas, num_samples=num_samples, chunk_size=chunk_size
    )


def measure(
    config, objective, trained, judge, test, baseline=None
) -> tuple[dict, np.ndarray, np.ndarray]:
    """Every measurement of one trained model.

    Returns its results row, its activation-maximisation samples and its input-gradients of
    the pixel-perturbation images. Each measurement draws from its own key, the same for
    every model (common random numbers: the objectives are compared on the same probes,
    starting points and noise). With ``baseline`` (the cross-entropy model), pixel
    perturbation is also run on it with this model's gradients (the paper's Fig. 3b).
    """
    lf, variables = trained.logit_fn, trained.variables
    e = config.evaluation
    out = {"test_accuracy": trained.test_metrics["accuracy"]}
    out["hessian_trace"] = measure_traces(config, objective, lf, variables, test)
    # GAN-test: activation maximisation from noise, judged by the proxy.
    g = e.gan_test
    targets = jnp.arange(g.num_samples) % config.data.num_classes
    start_key = purpose_key(config.seed, Purpose.START_NOISE)
    shape = (g.num_samples, *test["image"].shape[1:])
    x0 = jnp.clip(0.5 + 0.2 * jax.random.normal(start_key, shape), 0.0, 1.0)
    samples = _activation_maximisation(
        lf, variables, x0, targets, g.step_size, g.weight_decay, steps=g.steps
    )
    out["gan_test_accuracy"] = float(
        gan_test_accuracy(judge.logit_fn, judge.variables, samples, targets).mean()
    )
    out["self_accuracy_on_samples"] = float(
        jnp.mean(jnp.argmax(lf(variables, samples), -1) == targets)
    )
    # Discriminative pixel perturbation: least salient pixels by the model's own gradient
    # replaced by the config's fill (the image mean of the paper's text, or the code's 0.5);
    # accuracy. Random order as the control; 3b: the baseline masked by these gradients.
    p = e.perturbation
    xp, yp = jnp.asarray(test["image"][: p.num_images]), jnp.asarray(test["label"][: p.num_images])
    attr = _chunked(lambda a, b: _gradient(lf, variables, a, b), xp, yp, size=p.chunk)
    out["pixel_perturbation"] = {"fractions": list(p.fractions)}
    judged = [("least", lf, variables, "least"), ("random", lf, variables, "random")]
    if baseline is not None:  # 3b: the baseline model, masked by this model's gradients
        judged.append(("baseline_model", baseline.logit_fn, baseline.variables, "least"))
    order_key = purpose_key(config.seed, Purpose.PERTURBATION_ORDER)
    for name, judge_lf, judge_vars, order in judged:
        correct = _chunked(
            lambda a, b, m, f=judge_lf, v=judge_vars, o=order: _perturbation(
                f,
                v,
                a,
                b,
                m,
                order_key,
                p.fill_value,
                fractions=tuple(p.fractions),
                order=o,
                aggregate=p.aggregate,
                fill=p.fill,
            ),
            xp,
            yp,
            attr,
            size=p.chunk,
            axis=1,
        )
        acc = jnp.mean(correct, axis=1)
        out["pixel_perturbation"][name] = {
            "accuracy": np.asarray(acc).tolist(),
            "auc": float(area_under_curve(jnp.asarray(p.fractions), acc)),
        }
    # Density-ratio profile E[exp(f_y(x + eta) - f_y(x))] over noise levels.
    d = e.density_ratio
    xd, yd = jnp.asarray(test["image"][: d.num_images]), jnp.asarray(test["label"][: d.num_images])
    sigmas = jnp.asarray(d.sigmas, jnp.float32)
    noise = purpose_key(config.seed, Purpose.DENSITY_NOISE)
    prof = np.concatenate(
        [
            _density_ratio(  # new noise for every chunk of images
                lf,
                variables,
                xd[i : i + d.chunk],
                yd[i : i + d.chunk],
                jax.random.fold_in(noise, i),
                sigmas,
                num_samples=d.num_samples,
            )
            for i in range(0, d.num_images, d.chunk)
        ],
        axis=1,
    )
    out["density_ratio"] = {
        "sigmas": list(d.sigmas),
        "mean": prof.mean(1).tolist(),
        "median": np.median(prof, 1).tolist(),
        "fraction_above_1": (prof > 1).mean(1).tolist(),
    }
    spec = objective_spec(config, objective)
    out["hyper"] = {
        **PAPER_DEFAULTS[spec["kind"]],
        **{k: v for k, v in spec.items() if k != "kind"},
    }
    return out, np.asarray(samples), np.asarray(attr)


def _run_files(workdir: Path, name: str) -> dict:
    """Checkpoints (a rerun resumes from them), metrics and TensorBoard events of ``name``."""
    return {
        "checkpoint_dir": workdir / "checkpoints" / name,
        "metrics_path": workdir / "metrics" / f"{name}.jsonl",
        "tensorboard_dir": workdir / "tensorboard" / name,
    }


def _load_measurement(workdir, objective: str):
    """The row, samples and maps a previous run of this workdir measured, or None."""
    row, arrays = (
        workdir / "measurements" / f"{objective}.json",
        workdir / "measurements" / f"{objective}.npz",
    )
    if not (row.exists() and arrays.exists()):
        return None
    with arrays.open("rb") as f, np.load(f) as a:
        return json.loads(row.read_text()), a["samples"], a["gradients"]


def _save_measurement(workdir, objective: str, row: dict, samples, gradients) -> None:
    """Keeps one model's measurements, so a resumed run does not measure it again."""
    if jax.process_index() != 0:
        return
    folder = workdir / "measurements"
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / f"{objective}.npz").open("wb") as f:
        np.savez(f, samples=np.asarray(samples), gradients=np.asarray(gradients))
    (folder / f"{objective}.json").write_text(json.dumps(row, default=float))


def _chunked(fn, *arrays, size: int, axis: int = 0) -> np.ndarray:
    """``fn`` over chunks of ``size`` examples, concatenated along ``axis`` (bounds memory)."""
    n = len(arrays[0])
    parts = [np.asarray(fn(*(a[i : i + size] for a in arrays))) for i in range(0, n, size)]
    return np.concatenate(parts, axis=axis)


def run(config, workdir: str | Path) -> dict:
    """Runs the experiment into ``workdir``."""
    t0 = time.perf_counter()
    workdir = report.workdir_path(workdir)
    report.write_config(workdir, config)
    train, test = load_splits(config.data)
    mesh = make_mesh(config.num_devices)
    judge_config = config.evaluation.gan_test.judge
    judge_model = make_model(judge_config.model, config.data.num_classes)
    print(f"training the GAN-test judge ({type(judge_model).__name__}, another key)", flush=True)
    judge_train = override(config.train, **judge_config.train)
    judge = train_model(
        judge_model,
        classifier_loss(judge_model),
        train,
        judge_train,
        key=purpose_key(config.seed, Purpose.JUDGE),
        test=test,
        mesh=mesh,
        **_run_files(workdir, "judge"),
    )
    results = {"judge_test_accuracy": judge.test_metrics["accuracy"]}
    model = make_model(config.model, config.data.num_classes)
    # A paired comparison: the four objectives start from one initialisation and see one
    # batch order, so the objective is the only difference between the models.
    key = purpose_key(config.seed, Purpose.MODEL)
    samples, maps, baseline = {}, {}, None
    for objective in config.train.objectives:
        print(f"training with {reports.score_matching.NAMES[objective]}", flush=True)
        loss = objective_loss(config, model, objective)
        trained = train_model(
            model,
            loss,
            train,
            config.train,
            key=key,
            test=test,
            mesh=mesh,
            **_run_files(workdir, objective),
        )
        saved = _load_measurement(workdir, objective)
        if saved is not None:  # a resumed run: measured before it was stopped
            row, samples[objective], maps[objective] = saved
        else:
            row, samples[objective], maps[objective] = measure(
                config, objective, trained, judge, test, baseline
            )
            if objective == "none":  # 3b of the baseline is its own 3a
                row["pixel_perturbation"]["baseline_model"] = row["pixel_perturbation"]["least"]
            _save_measurement(workdir, objective, row, samples[objective], maps[objective])
        if objective == "none":
            baseline = trained
        results[objective] = row
        headline = ("test_accuracy", "gan_test_accuracy")
        print(json.dumps({objective: {k: row[k] for k in headline}}), flush=True)
    out = {"results": results, "seconds": time.perf_counter() - t0}
    reports.score_matching.write(
        workdir, config, out, images=test["image"], samples=samples, gradients=maps
    )
    return out


def plan(config, dry: DryRun) -> None:
    """The run's programs for ``--dry_run``: the trainings, then the measurements.

    The judge and every objective are trained.
    The measurements run once per objective, unsharded (one chip's time in the projection,
    whatever the slice; with replicated parameters every device repeats them); every
    objective's model has the same architecture, so one compiled program serves them all
    (and 3b, which masks the baseline).
    """
    mesh = make_mesh(config.num_devices)
    judge_config = config.evaluation.gan_test.judge
    judge_model = make_model(judge_config.model, config.data.num_classes)
    judge_train = override(config.train, **judge_config.train)
    judge_loss = classifier_loss(judge_model)
    plan_training(dry, "judge", judge_model, judge_loss, config.data, judge_train, mesh)
    model = make_model(config.model, config.data.num_classes)
    for objective in config.train.objectives:
        loss = objective_loss(config, model, objective)
        variables = plan_training(dry, objective, model, loss, config.data, config.train, mesh)
    k, lf, e = len(config.train.objectives), linen_logit_fn(model), config.evaluation
    _, shape = source_shape(config.data.source, "test")
    key = abstract_key()

    def chunks(n, size):
        return k * -(-n // size)

    t = e.trace
    c = min(t.chunk, t.num_images)
    x, y = abstract_images(c, shape)
    if t.get("exact", True):
        dry.add(
            f"exact Hessian trace ({c} images)",
            _trace_exact,
            lf,
            variables,
            x,
            y,
            calls=chunks(t.num_images, c),
        )
    for estimator in ("hutchinson", "taylor", "taylor_one_sided"):
        dry.add(
            f"{estimator} trace draws ({c} images, {t.draws} draws)",
            _trace_draws,
            lf,
            variables,
            x,
            y,
            key,
            0.01,
            estimator=estimator,
            draws=t.draws,
            calls=chunks(t.num_images, c),
        )
    g = e.gan_test
    x, y = abstract_images(g.num_samples, shape)
    dry.add(
        f"activation maximisation, one step ({g.num_samples} samples)",
        _activation_maximisation,
        lf,
        variables,
        x,
        y,
        g.step_size,
        g.weight_decay,
        steps=1,
        calls=k * g.steps,
        note=f"compiled for one step; the run's program loops {g.steps} times",
    )
    p = e.perturbation
    c = min(p.chunk, p.num_images)
    x, y = abstract_images(c, shape)
    dry.add(
        f"input-gradients ({c} images)",
        _gradient,
        lf,
        variables,
        x,
        y,
        calls=chunks(p.num_images, c),
    )
    objectives = list(config.train.objectives)
    # least and random for every model; 3b (the baseline masked by the model's gradients)
    # for the models measured after the baseline.
    orders = sum(3 if "none" in objectives[:i] else 2 for i, o in enumerate(objectives))
    dry.add(
        f"pixel perturbation ({c} images, {len(p.fractions)} fractions)",
        _perturbation,
        lf,
        variables,
        x,
        y,
        x,
        key,
        p.fill_value,
        fractions=tuple(p.fractions),
        order="least",
        aggregate=p.aggregate,
        fill=p.fill,
        calls=orders * -(-p.num_images // c),
        unlooped={"chunk_size": None},
    )
    d = e.density_ratio
    c = min(d.chunk, d.num_images)
    x, y = abstract_images(c, shape)
    sigmas = jax.ShapeDtypeStruct((len(d.sigmas),), jnp.float32)
    dry.add(
        f"density-ratio profile ({c} images, {d.num_samples} draws)",
        _density_ratio,
        lf,
        variables,
        x,
        y,
        key,
        sigmas,
        num_samples=d.num_samples,
        calls=chunks(d.num_images, c),
        unlooped={"chunk_size": None},
    )


if __name__ == "__main__":
    launch(run, "score_matching", "Score-matching config.", plan)
