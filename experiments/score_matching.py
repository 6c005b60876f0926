"""Srinivas & Fleuret (2021) at MNIST scale: the four training objectives compared.

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

from experiments.common import (
    launch,
    load_splits,
    make_mesh,
    make_model,
    override,
    pyplot,
    save_config,
    train_model,
)
from jaxgrad.attribution import gradient
from jaxgrad.evaluation import (
    area_under_curve,
    density_ratio_profile,
    gan_test_accuracy,
    gradient_ascent,
    pixel_perturbation,
)
from jaxgrad.gradients import select_logits
from jaxgrad.score_matching import PAPER_DEFAULTS, hessian_trace_hutchinson
from jaxgrad.training import classifier_loss, regularized_classifier_loss
from jaxgrad.viz import attribution_grid

NAMES = {
    "none": "baseline (cross-entropy)",
    "score_matching": "score matching",
    "anti_score_matching": "anti-score-matching",
    "gradient_norm": "gradient norm",
}
# Table 1 of the paper (CIFAR-100, ResNet-18 softplus): test accuracy and GAN-test, percent.
PAPER = {
    "none": (78.01, 59.47),
    "score_matching": (72.20, 72.75),
    "anti_score_matching": (74.87, 16.40),
    "gradient_norm": (76.60, 80.07),
}


# Compiled once per logit function (the four objectives share one) with the params as an
# argument, not a constant baked into each model's program.
@functools.partial(jax.jit, static_argnums=0, static_argnames="num_probes")
def _hessian_trace(lf, variables, x, y, key, *, num_probes):
    """Hutchinson's trace of the label's logit with Rademacher probes (jvp of the vjp)."""
    return hessian_trace_hutchinson(
        lambda z: select_logits(lf(variables, z), y), x, key=key, num_probes=num_probes
    )


@functools.partial(jax.jit, static_argnums=0, static_argnames="steps")
def _activation_maximisation(lf, variables, x0, target, step_size, weight_decay, *, steps):
    return gradient_ascent(
        lf, variables, x0, target, step_size=step_size, steps=steps, weight_decay=weight_decay
    )


@functools.partial(jax.jit, static_argnums=0, static_argnames="num_samples")
def _density_ratio(lf, variables, x, y, key, sigmas, *, num_samples):
    return density_ratio_profile(
        lf, variables, x, y, key=key, sigmas=sigmas, num_samples=num_samples, chunk_size=4
    )


def _in_chunks(fn, n, size, *arrays):
    return jnp.concatenate([fn(*(a[i : i + size] for a in arrays)) for i in range(0, n, size)])


def measure(config, objective, trained, judge, test, key) -> dict:
    """Every measurement of one trained model."""
    lf, variables = trained.logit_fn, trained.variables
    e = config.evaluation
    out = {"test_accuracy": trained.test_metrics["accuracy"]}
    n = e.trace.num_images
    x, y = jnp.asarray(test["image"][:n]), jnp.asarray(test["label"][:n])

    def trace(xx, yy):
        return _hessian_trace(lf, variables, xx, yy, key, num_probes=e.trace.num_probes)

    tr = np.asarray(_in_chunks(trace, n, 64, x, y))
    out["hessian_trace"] = {"mean": float(tr.mean()), "median": float(np.median(tr))}
    # GAN-test: activation maximisation from noise, judged by the proxy.
    g = e.gan_test
    targets = jnp.arange(g.num_samples) % 10
    x0 = jnp.clip(0.5 + 0.2 * jax.random.normal(key, (g.num_samples, *x.shape[1:])), 0.0, 1.0)
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
    # replaced by the image mean (the paper's text); accuracy. Random order as the control.
    p = e.perturbation
    xp, yp = jnp.asarray(test["image"][: p.num_images]), jnp.asarray(test["label"][: p.num_images])
    attr = gradient(lf, variables, xp, yp)
    out["pixel_perturbation"] = {"fractions": list(p.fractions)}
    for order in ("least", "random"):
        r = pixel_perturbation(
            lf,
            variables,
            xp,
            yp,
            attr,
            fractions=p.fractions,
            order=order,
            aggregate="abs_sum",
            fill="image_mean",
            key=jax.random.fold_in(key, 1),
            chunk_size=2,
        )
        acc = jnp.mean(r["correct"], axis=1)
        out["pixel_perturbation"][order] = {
            "accuracy": np.asarray(acc).tolist(),
            "auc": float(area_under_curve(r["fractions"], acc)),
        }
    # Density-ratio profile E[exp(f_y(x + eta) - f_y(x))] over noise levels.
    d = e.density_ratio
    xd, yd = jnp.asarray(test["image"][: d.num_images]), jnp.asarray(test["label"][: d.num_images])
    sigmas = jnp.asarray(d.sigmas, jnp.float32)
    prof = np.asarray(_density_ratio(lf, variables, xd, yd, key, sigmas, num_samples=d.num_samples))
    out["density_ratio"] = {
        "sigmas": list(d.sigmas),
        "mean": prof.mean(1).tolist(),
        "median": np.median(prof, 1).tolist(),
        "fraction_above_1": (prof > 1).mean(1).tolist(),
    }
    out["hyper"] = PAPER_DEFAULTS[objective]
    return out, np.asarray(samples), np.asarray(attr[:8])


def run(config, workdir: str | Path) -> dict:
    """Runs the experiment into ``workdir``."""
    t0 = time.perf_counter()
    workdir = Path(workdir).absolute()
    save_config(config, workdir)
    train, test = load_splits(config.data)
    mesh = make_mesh(config.num_devices)
    key = jax.random.key(config.seed)
    judge_config = config.evaluation.gan_test.judge
    print("training the GAN-test judge (ReLU CNN, another seed)", flush=True)
    judge_model = make_model(
        override(config.model, activation=judge_config.activation, beta=judge_config.beta),
        config.data.num_classes,
    )
    judge = train_model(
        judge_model,
        classifier_loss(judge_model),
        train,
        override(config.train, epochs=judge_config.epochs),
        key=jax.random.fold_in(key, 1000),
        test=test,
        mesh=mesh,
    )
    results = {"judge_test_accuracy": judge.test_metrics["accuracy"]}
    model = make_model(config.model, config.data.num_classes)
    samples, maps = {}, {}
    for objective in config.train.objectives:
        print(f"training with {NAMES[objective]}", flush=True)
        loss = regularized_classifier_loss(model, kind=objective)
        trained = train_model(model, loss, train, config.train, key=key, test=test, mesh=mesh)
        row, samples[objective], maps[objective] = measure(
            config, objective, trained, judge, test, jax.random.fold_in(key, 7)
        )
        results[objective] = row
        headline = ("test_accuracy", "gan_test_accuracy", "hessian_trace")
        print(json.dumps({objective: {k: row[k] for k in headline}}), flush=True)
    out = {"results": results, "seconds": time.perf_counter() - t0}
    if jax.process_index() == 0:
        (workdir / "results.json").write_text(json.dumps(out, indent=1))
        _figures(workdir, config, test, results, samples, maps)
        _report(workdir, config, out)
    return out


def _figures(workdir, config, test, results, samples, maps):
    plt = pyplot()

    objectives = list(config.train.objectives)
    # One sample per class (the first of each), a row per objective.
    fig, axes = plt.subplots(
        len(objectives), 10, figsize=(10, 1.1 * len(objectives) + 0.4), squeeze=False
    )
    for r, obj in enumerate(objectives):
        for cls in range(10):
            ax = axes[r, cls]
            ax.imshow(samples[obj][cls, ..., 0], cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
            if cls == 0:
                ax.set_ylabel(NAMES[obj], fontsize=7)
            if r == 0:
                ax.set_title(str(cls), fontsize=8)
    fig.suptitle("Activation maximisation: gradient ascent on f_y from noise", fontsize=9)
    fig.tight_layout()
    fig.savefig(workdir / "samples.png", dpi=110)
    plt.close(fig)
    attribution_grid(
        np.asarray(test["image"][:8]),
        [maps[o] for o in objectives],
        workdir / "gradients.png",
        row_titles=[NAMES[o] for o in objectives],
        title="Input-gradients of the label's logit",
    )
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for obj in objectives:
        r = results[obj]
        pp = r["pixel_perturbation"]
        a1.plot(pp["fractions"], pp["least"]["accuracy"], marker="o", label=NAMES[obj])
        dr = r["density_ratio"]
        a2.plot(dr["sigmas"], dr["mean"], marker="o", label=NAMES[obj])
    base = results[objectives[0]]["pixel_perturbation"]
    a1.plot(base["fractions"], base["random"]["accuracy"], "k--", label="baseline, random order")
    a1.set_xlabel("fraction of least salient pixels replaced by the image mean")
    a1.set_ylabel("test accuracy (higher is better)")
    a1.legend(fontsize=7)
    a2.set_xscale("log")
    a2.set_yscale("log")
    a2.axhline(1.0, color="grey", lw=0.8)
    a2.set_xlabel("noise std sigma")
    a2.set_ylabel("E exp(f_y(x + eta) - f_y(x)) (lower is better)")
    fig.tight_layout()
    fig.savefig(workdir / "curves.png", dpi=110)
    plt.close(fig)


def _report(workdir, config, out):
    res = out["results"]
    e, m, t = config.evaluation, config.model, config.train
    g, p, d = e.gan_test, e.perturbation, e.density_ratio
    lines = [
        "# Score matching at MNIST scale (Srinivas & Fleuret 2021)",
        "",
        f"CNN conv5x5x{m.features[0]}, conv5x5x{m.features[1]}, dense {m.dense}, "
        f"{m.activation} (beta {m.beta}); {t.epochs} epochs of Adam {t.learning_rate}, "
        f"batch {t.batch_size}, on `{config.data.source}`. Regularizers of Eq. 4 with the "
        "paper's hyper-parameters (`PAPER_DEFAULTS`; Taylor trace estimate, one sample). "
        f"{out['seconds']:.0f} s.",
        "",
        f"- Hessian trace of the label's logit: Hutchinson, {e.trace.num_probes} Rademacher "
        f"probes, {e.trace.num_images} test images.",
        f"- GAN-test: {g.num_samples} samples ({g.num_samples // 10} per class), {g.steps} steps "
        f"of gradient ascent with step {g.step_size} and weight decay {g.weight_decay} toward "
        "0.5, from clip(N(0.5, 0.2^2), 0, 1); judged by a ReLU CNN of the same widths trained "
        f"separately (test accuracy {res['judge_test_accuracy']:.4f}).",
        f"- Pixel perturbation: the least salient pixels by |gradient| of the label's logit "
        f"replaced by the image mean, on {p.num_images} test images; area under accuracy vs "
        "fraction (higher is better), random order as the control.",
        f"- Density ratio: E exp(f_y(x + eta) - f_y(x)), {d.num_samples} draws per image, "
        f"{d.num_images} test images (lower is better).",
        "",
        "| objective | test acc. | Hessian trace (median) | GAN-test acc. | own acc. on samples "
        "| pixel pert. AUC (least / random) | density ratio at sigma "
        + " / ".join(str(s) for s in d.sigmas)
        + " | paper (CIFAR-100): acc. / GAN-test |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for obj in t.objectives:
        r = res[obj]
        pp = r["pixel_perturbation"]
        ratios = " / ".join(f"{v:.3g}" for v in r["density_ratio"]["mean"])
        paper = PAPER[obj]
        lines.append(
            f"| {NAMES[obj]} | {r['test_accuracy']:.4f} | {r['hessian_trace']['median']:.4g} | "
            f"{r['gan_test_accuracy']:.3f} | {r['self_accuracy_on_samples']:.3f} | "
            f"{pp['least']['auc']:.3f} / {pp['random']['auc']:.3f} | {ratios} | "
            f"{paper[0]:.2f} / {paper[1]:.2f} |"
        )
    lines += [
        "",
        "The paper's claims (CIFAR-100): accuracy baseline >= gradient norm >= anti >= score; "
        "GAN-test gradient norm > score > baseline >> anti; pixel perturbation score ~ "
        "gradient norm > baseline > anti; the baseline's density ratio exceeds 1 (noisy inputs "
        "get more density than real ones) and anti-score-matching steepens it.",
        "",
        "![samples](samples.png)",
        "",
        "![gradients](gradients.png)",
        "",
        "![curves](curves.png)",
        "",
    ]
    (workdir / "report.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    launch(run, "score_matching", "Score-matching config.")
