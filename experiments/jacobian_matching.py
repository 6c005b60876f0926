"""Jacobian matching (Srinivas & Fleuret 2018): distilling a teacher into students from few examples.

A teacher is trained on the whole training split; students learn from random subsets of a
few hundred examples with cross-entropy, distillation, distillation plus Jacobian matching
and distillation under input noise (``experiments/configs/jacobian_matching.py``). Writes
``results.json``, ``table.csv``, ``accuracy.png`` and ``report.md`` into ``--workdir``.

  python -m experiments.jacobian_matching --workdir=runs/jacobian_matching
"""

from __future__ import annotations

import functools
import json
import math
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
from experiments.dry_run import DryRun, abstract_images
from jaxgrad import distillation_loss, jacobian_matching_loss
from jaxgrad.data import source_shape, steps_per_epoch
from jaxgrad.models import linen_logit_fn
from jaxgrad.training import classifier_loss


def make_regularizer(method: str, teacher_fn, teacher_variables, d):
    """The term added to the student's cross-entropy, ``reg(logit_fn, params, x, y, *, key)``."""

    def distill(logit_fn, params, x):
        return d.alpha * distillation_loss(
            logit_fn(params, x), teacher_fn(teacher_variables, x), temperature=d.temperature
        )

    if method == "cross_entropy":
        return None
    if method == "distillation":
        return lambda lf, p, x, y, *, key: distill(lf, p, x)
    if method == "jacobian_matching":
        return lambda lf, p, x, y, *, key: (
            distill(lf, p, x)
            + d.beta * jacobian_matching_loss(lf, p, teacher_fn, teacher_variables, x, y)
        )
    if method == "noisy_distillation":
        return lambda lf, p, x, y, *, key: distill(
            lf, p, x + d.sigma * jax.random.normal(key, x.shape, x.dtype)
        )
    raise ValueError(f"unknown method {method!r}")


@functools.partial(jax.jit, static_argnums=0)
def _argmax(logit_fn, variables, x):
    return jnp.argmax(logit_fn(variables, x), axis=-1)


def predictions(logit_fn, variables, images: np.ndarray, chunk: int) -> np.ndarray:
    """The predicted class of every image, ``chunk`` images per call."""
    return np.concatenate(
        [
            np.asarray(_argmax(logit_fn, variables, jnp.asarray(images[i : i + chunk])))
            for i in range(0, len(images), chunk)
        ]
    )


def subset(train: dict, size: int, key: jax.Array) -> dict:
    """``size`` examples of ``train`` drawn without replacement."""
    idx = np.asarray(jax.random.choice(key, len(train["label"]), (size,), replace=False))
    return {"image": train["image"][idx], "label": train["label"][idx]}


def run(config, workdir: str | Path) -> dict:
    """Trains the teacher and every student; returns the measured figures."""
    t0 = time.perf_counter()
    workdir = report.workdir_path(workdir)
    report.write_config(workdir, config)
    train, test = load_splits(config.data)
    mesh = make_mesh(config.num_devices)
    k = config.data.num_classes
    teacher_model = make_model(config.model.teacher, k)
    teacher = train_model(
        teacher_model,
        classifier_loss(teacher_model),
        train,
        config.train,
        key=purpose_key(config.seed, Purpose.MODEL),
        test=test,
        mesh=mesh,
        checkpoint_dir=workdir / "teacher" / "checkpoints",
        metrics_path=workdir / "teacher" / "metrics.jsonl",
    )
    teacher_fn, teacher_vars = teacher.logit_fn, teacher.variables
    d = config.distill
    student_model = make_model(config.model.student, k)
    student_fn = linen_logit_fn(student_model)
    n_grad = min(config.evaluation.gradient_images, len(test["label"]))
    xg, yg = jnp.asarray(test["image"][:n_grad]), jnp.asarray(test["label"][:n_grad])
    chunk = config.evaluation.gradient_images  # images per evaluation call
    teacher_pred = predictions(teacher_fn, teacher_vars, test["image"], chunk)
    penalty_fn = jax.jit(
        lambda sv, tv, xx, yy: jnp.mean(
            jacobian_matching_loss(student_fn, sv, teacher_fn, tv, xx, yy)
        )
    )
    runs = []
    total = len(d.sizes) * d.seeds * len(d.methods)
    for size in d.sizes:
        for rep in range(d.seeds):
            data = subset(train, size, purpose_key(config.seed, Purpose.SUBSET, size, rep))
            per_epoch = steps_per_epoch(size, d.train.batch_size)
            section = override(
                config.train,
                **d.train,
                epochs=math.ceil(d.steps / per_epoch),
                max_steps=d.steps,
                log_every=max(1, d.steps // 4),
            )
            for method in d.methods:
                print(
                    f"[{len(runs) + 1}/{total}] {method}, {size} examples, repeat {rep}", flush=True
                )
                reg = make_regularizer(method, teacher_fn, teacher_vars, d)
                student = train_model(
                    student_model,
                    classifier_loss(student_model, regularizer=reg),
                    data,
                    section,
                    # one key per (size, repeat): every method starts from the same
                    # initialisation and sees the same batches (paired comparison)
                    key=purpose_key(config.seed, Purpose.STUDENT, size, rep),
                    test=test,
                    mesh=mesh,
                    progress=False,
                )
                pred = predictions(student_fn, student.variables, test["image"], chunk)
                agreement = float(np.mean(pred == teacher_pred))
                penalty = penalty_fn(student.variables, teacher_vars, xg, yg)
                runs.append(
                    dict(
                        method=method,
                        size=size,
                        repeat=rep,
                        accuracy=student.test_metrics["accuracy"],
                        teacher_agreement=agreement,
                        jacobian_distance=float(penalty),
                    )
                )
                print(
                    f"  test accuracy {runs[-1]['accuracy']:.4f}, agreement with the teacher "
                    f"{agreement:.4f}, Jacobian distance {runs[-1]['jacobian_distance']:.3f} "
                    f"({time.perf_counter() - t0:.0f} s)",
                    flush=True,
                )
    results = {
        "teacher_accuracy": teacher.test_metrics["accuracy"],
        "train_examples": int(len(train["label"])),
        "test_examples": int(len(test["label"])),
        "runs": runs,
        "summary": summarize(runs, list(d.methods)),
        "seconds": time.perf_counter() - t0,
    }
    reports.jacobian_matching.write(workdir, config, results)
    print(json.dumps(results["summary"], indent=1), flush=True)
    return results


def summarize(runs: list[dict], methods: list[str]) -> list[dict]:
    """Mean and standard error over repeats of each (method, size), and the paired gain over CE."""
    out = []
    keys = sorted(
        {(r["size"], r["method"]) for r in runs}, key=lambda t: (t[0], methods.index(t[1]))
    )
    for size, method in keys:
        rows = sorted(
            (r for r in runs if (r["size"], r["method"]) == (size, method)),
            key=lambda r: r["repeat"],
        )
        ce = sorted(
            (r for r in runs if (r["size"], r["method"]) == (size, "cross_entropy")),
            key=lambda r: r["repeat"],
        )
        row = dict(method=method, size=size, n=len(rows))
        for name in ("accuracy", "teacher_agreement", "jacobian_distance"):
            v = np.array([r[name] for r in rows])
            row[name] = float(v.mean())
            row[f"{name}_se"] = float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else None
        if len(ce) == len(rows):
            gain = np.array([r["accuracy"] - c["accuracy"] for r, c in zip(rows, ce, strict=True)])
            row["gain_over_ce"] = float(gain.mean())
            row["gain_over_ce_se"] = (
                float(gain.std(ddof=1) / np.sqrt(len(gain))) if len(gain) > 1 else None
            )
        out.append(row)
    return out


def plan(config, dry: DryRun) -> None:
    """The run's programs for ``--dry_run``: the teacher, every method's students, the penalty.

    The teacher's training; per method, one student's train step (``distill.steps`` calls)
    and evaluation, times ``sizes x seeds`` students; the Jacobian distance on the
    ``gradient_images`` test images per student.
    """
    mesh = make_mesh(config.num_devices)
    k = config.data.num_classes
    d = config.distill
    teacher_model = make_model(config.model.teacher, k)
    teacher_vars = plan_training(
        dry,
        "teacher",
        teacher_model,
        classifier_loss(teacher_model),
        config.data,
        config.train,
        mesh,
    )
    teacher_fn = linen_logit_fn(teacher_model)
    # The students' losses close over the teacher's variables: concrete (zero) arrays here.
    teacher_vars = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), teacher_vars)
    student_model = make_model(config.model.student, k)
    students = len(d.sizes) * d.seeds
    # Every student runs ``steps`` whatever its subset's size: enough epochs of the full
    # split (plan_training's count) for ``max_steps`` to be reached.
    n_train, _ = source_shape(config.data.source, "train")
    per_epoch = steps_per_epoch(n_train, d.train.batch_size)
    section = override(
        config.train, **d.train, epochs=math.ceil(d.steps / per_epoch), max_steps=d.steps
    )
    student_vars = None
    for method in d.methods:
        reg = make_regularizer(method, teacher_fn, teacher_vars, d)
        student_vars = plan_training(
            dry,
            f"student, {method}",
            student_model,
            classifier_loss(student_model, regularizer=reg),
            config.data,
            section,
            mesh,
            repeats=students,
        )
    _, shape = source_shape(config.data.source, "test")
    x, y = abstract_images(config.evaluation.gradient_images, shape)
    penalty = jax.jit(
        lambda sv, tv, xx, yy: jnp.mean(
            jacobian_matching_loss(linen_logit_fn(student_model), sv, teacher_fn, tv, xx, yy)
        )
    )
    n_test, _ = source_shape(config.data.source, "test")
    chunk = config.evaluation.gradient_images
    dry.add(
        f"predictions ({chunk} images)",
        _argmax,
        teacher_fn,
        teacher_vars,
        x,
        calls=(1 + students * len(d.methods)) * -(-n_test // chunk),
        note="the teacher's; the students' cost less",
    )
    dry.add(
        f"Jacobian distance ({config.evaluation.gradient_images} images)",
        penalty,
        student_vars,
        teacher_vars,
        x,
        y,
        calls=students * len(d.methods),
    )


if __name__ == "__main__":
    launch(run, "jacobian_matching", "Jacobian-matching config.", plan)
