"""The score-matching comparison's outputs: ``results.json``, three figures and ``report.md``.

Writes ``samples.png`` (activation maximisation, one sample per class and objective),
``gradients.png`` (input-gradients of the first test images), ``curves.png`` (pixel
perturbation and the density-ratio profile) and ``report.md`` with the paper's figures beside
the measured ones.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from experiments import report

NAMES = {
    "none": "baseline (cross-entropy)",
    "score_matching": "score matching",
    "anti_score_matching": "anti-score-matching",
    "gradient_norm": "gradient norm",
    "score_matching_mu0": "score matching, mu = 0",
    "anti_score_matching_hutchinson": "anti-score-matching, Hutchinson trace",
}
# Table 1 of the paper (CIFAR-100, ResNet-18 softplus): test accuracy and GAN-test, percent.
PAPER = {
    "none": (78.01, 59.47),
    "score_matching": (72.20, 72.75),
    "anti_score_matching": (74.87, 16.40),
    "gradient_norm": (76.60, 80.07),
}
NUM_SHOWN = 8  # test images in gradients.png


def write(workdir, config, out: dict, *, images, samples: dict, gradients: dict) -> Path:
    """Writes the results, figures and report into ``workdir``; returns ``report.md``.

    Args:
      workdir: the run's folder.
      config: the run's config.
      out: the dict returned by ``experiments.score_matching.run``.
      images: ``[N, H, W, C]`` the test images, in order (the first 8 are shown).
      samples: objective -> ``[S, H, W, C]`` activation-maximisation samples, sample ``i``
        of class ``i % num_classes``.
      gradients: objective -> ``[N, H, W, C]`` input-gradients of the label's logit on
        ``images``.
    """
    workdir = report.workdir_path(workdir)
    report.write_json(workdir / "results.json", out)
    _figures(workdir, config, out["results"], images, samples, gradients)
    return report.write_report(workdir, _blocks(config, out))


def _figures(workdir, config, results, images, samples, gradients):
    objectives = list(config.train.objectives)
    # One sample per class (the first of each, first 10 classes), a row per objective.
    report.image_grid(
        workdir / "samples.png",
        np.stack([samples[obj][:10] for obj in objectives]),
        row_titles=[NAMES[obj] for obj in objectives],
        column_titles=[str(cls) for cls in range(10)],
        title="Activation maximisation: gradient ascent on f_y from noise",
    )
    report.attribution_figure(
        workdir / "gradients.png",
        images[:NUM_SHOWN],
        [gradients[o][:NUM_SHOWN] for o in objectives],
        row_titles=[NAMES[o] for o in objectives],
        title="Input-gradients of the label's logit",
    )
    base = results[objectives[0]]["pixel_perturbation"]
    perturbation = report.Panel(
        [
            *(
                report.Curve(
                    results[obj]["pixel_perturbation"]["fractions"],
                    results[obj]["pixel_perturbation"]["least"]["accuracy"],
                    NAMES[obj],
                )
                for obj in objectives
            ),
            report.Curve(
                base["fractions"], base["random"]["accuracy"], "baseline, random order", style="k--"
            ),
        ],
        xlabel=f"fraction of least salient pixels replaced by {_fill_name(config)}",
        xscale="log" if min(base["fractions"]) > 0 else "linear",
        ylabel="test accuracy (higher is better)",
    )
    density_ratio = report.Panel(
        [
            report.Curve(
                results[obj]["density_ratio"]["sigmas"],
                results[obj]["density_ratio"]["mean"],
                NAMES[obj],
            )
            for obj in objectives
        ],
        xlabel="noise std sigma",
        ylabel="E exp(f_y(x + eta) - f_y(x)) (lower is better)",
        xscale="log",
        yscale="log",
        hline=1.0,
        legend_size=None,
    )
    report.curves(workdir / "curves.png", [perturbation, density_ratio], dpi=110)


def _fill_name(config) -> str:
    p = config.evaluation.perturbation
    return "the image mean" if p.fill == "image_mean" else f"{p.fill} {p.fill_value}"


def _training(t) -> str:
    """The train section in words."""
    opt = f"{t.optimizer.upper() if t.optimizer == 'sgd' else t.optimizer.capitalize()}"
    opt += f" {t.learning_rate}"
    if t.optimizer == "sgd":
        opt += f" (momentum {t.momentum})"
    if t.weight_decay:
        opt += f", weight decay {t.weight_decay}"
    if t.schedule == "multistep":
        opt += f", x{t.gamma} at epochs {', '.join(str(m) for m in t.milestones)}"
    aug = ", random crop (pad 4) and flip" if t.augment == "cifar" else ""
    stop = f" (stopped after {t.max_steps} steps)" if t.max_steps else ""
    return f"{t.epochs} epochs{stop} of {opt}, batch {t.batch_size}{aug}"


def _blocks(config, out):
    res = out["results"]
    e, m, t = config.evaluation, config.model, config.train
    g, p, d = e.gan_test, e.perturbation, e.density_ratio
    rows, paper = [], []
    three_b = all("baseline_model" in res[o]["pixel_perturbation"] for o in t.objectives)
    for obj in t.objectives:
        r = res[obj]
        pp = r["pixel_perturbation"]
        rows.append(
            [
                NAMES[obj],
                f"{r['test_accuracy']:.4f}",
                _trace_headline(r["hessian_trace"]),
                f"{r['gan_test_accuracy']:.3f}",
                f"{r['self_accuracy_on_samples']:.3f}",
                f"{pp['least']['auc']:.3f} / {pp['random']['auc']:.3f}",
                *([f"{pp['baseline_model']['auc']:.3f}"] if three_b else []),
                " / ".join(f"{v:.3g}" for v in r["density_ratio"]["mean"]),
            ]
        )
        paper.append(f"{PAPER[obj][0]:.2f} / {PAPER[obj][1]:.2f}" if obj in PAPER else "")
    return [
        report.title("Score matching (Srinivas & Fleuret 2021)"),
        report.paragraph(
            f"{report.describe_model(m)}, {m.activation} (beta {m.beta}); {_training(t)}, on "
            f"`{report.source_name(config.data.source)}` ({config.data.num_classes} classes). "
            "Regularizers of Eq. 4 with the "
            "paper's hyper-parameters (`PAPER_DEFAULTS`; Taylor trace estimate, one sample). "
            f"{out['seconds']:.0f} s."
        ),
        report.bullets(
            f"Hessian trace of the label's logit on {e.trace.num_images} test images: exact "
            f"(every basis direction), Hutchinson ({e.trace.draws} Rademacher probes an image) "
            f"and the antithetic Taylor estimate at the model's training sigma ({e.trace.draws} "
            "noise pairs an image); see the trace table.",
            f"GAN-test: {g.num_samples} samples (sample i of class i mod "
            f"{config.data.num_classes}), {g.steps} steps of gradient ascent with step "
            f"{g.step_size} and weight decay {g.weight_decay} toward 0.5, from "
            "clip(N(0.5, 0.2^2), 0, 1); judged by a "
            f"{report.describe_model(g.judge.model)} ({g.judge.model.activation}) trained "
            f"separately (test accuracy {res['judge_test_accuracy']:.4f}).",
            f"Pixel perturbation: the least salient pixels (salience `{p.aggregate}` of the "
            f"label logit's gradient over channels) replaced by {_fill_name(config)}, on "
            f"{p.num_images} test images; area under accuracy vs fraction (higher is better), "
            "random order as the control"
            + ("; 3b: the baseline model masked by each model's gradients." if three_b else "."),
            f"Density ratio: E exp(f_y(x + eta) - f_y(x)), {d.num_samples} draws per image, "
            f"{d.num_images} test images (lower is better).",
        ),
        report.measured_vs_paper(
            [
                "objective",
                "test acc.",
                "Hessian trace (mean)",
                "GAN-test acc.",
                "own acc. on samples",
                "pixel pert. AUC (least / random)",
                *(["pixel pert. AUC, baseline model (3b)"] if three_b else []),
                "density ratio at sigma " + " / ".join(str(s) for s in d.sigmas),
            ],
            rows,
            paper,
            paper_header="paper (CIFAR-100): acc. / GAN-test",
        ),
        report.heading("Trace estimators on the same images"),
        report.paragraph(
            "Mean over the images; ± the Monte-Carlo standard error of that mean (the draws "
            "vary, the images are shared); z = (estimate - exact) / SE; 'within x%': a bound "
            "on the relative error, (|estimate - exact| + 3 SE) / |exact|; 'images within 3 "
            "SE': the share of images whose own estimate lies within 3 of its standard errors "
            "of the exact trace. Taylor: the antithetic pair at the training sigma (same "
            "expectation as the one-sided estimate, without its gradient term); one-sided: "
            "the estimate the models train on (one sample), whose variance carries "
            "4 ||grad f||^2 / sigma^2. The models train on the one-sided Taylor estimate "
            "except where named."
        ),
        report.table(
            [
                "objective",
                "exact",
                "Hutchinson",
                "Taylor, antithetic",
                "Taylor, one-sided (training's)",
                "images within 3 SE (Hutchinson / Taylor)",
            ],
            [_trace_row(NAMES[o], res[o]["hessian_trace"]) for o in t.objectives],
        ),  # fmt: skip
        report.paragraph(
            "The paper's claims (CIFAR-100): accuracy baseline >= gradient norm >= anti >= "
            "score; GAN-test gradient norm > score > baseline >> anti; pixel perturbation score "
            "~ gradient norm > baseline > anti; the baseline's density ratio exceeds 1 (noisy "
            "inputs get more density than real ones) and anti-score-matching steepens it."
        ),
        report.image("samples.png", "samples"),
        report.image("gradients.png", "gradients"),
        report.image("curves.png", "curves"),
    ]


def _trace_row(name: str, tr: dict) -> list[str]:
    h, t, o, exact = tr["hutchinson"], tr["taylor"], tr["taylor_one_sided"], tr["exact"]

    def est(e):
        text = f"{e['mean']:.4g} ± {e['se']:.2g}"
        if exact is not None:
            bound = e["relative_error_bound"]
            text += f" (z {e['z']:+.1f}" + ("" if bound is None else f", within {bound:.0%}") + ")"
        return text

    return [
        name,
        "not computed" if exact is None else f"{exact['mean']:.4g}",
        est(h),
        est(t),
        est(o),
        f"{h['images_within_3se']:.2f} / {t['images_within_3se']:.2f}" if exact else "",
    ]  # one cell per header column of the trace table


def _trace_headline(tr: dict) -> str:
    """The exact mean trace, or Hutchinson's where the exact one was not computed."""
    if tr["exact"] is not None:
        return f"{tr['exact']['mean']:.4g}"
    return f"{tr['hutchinson']['mean']:.4g} (Hutchinson)"
