"""The demo tour's outputs: ``results.json``, eight figures and ``report.md``.

Every sentence that states a finding is computed from the run's own numbers (a verdict per
part), so the report never claims what this run did not show.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from experiments import report

METRICS = report.SANITY_METRICS

METRIC_NAMES = {
    "spearman": "signed Spearman",
    "spearman_abs": "Spearman of absolute values",
    "spearman_nz": "spearman_nz",
}
METHOD_NAMES = {
    "gradient": "gradient",
    "gradient_x_input": "gradient x input",
    "integrated_gradients": "Integrated Gradients",
    "smoothgrad": "SmoothGrad",
    "gradcam": "Grad-CAM",
    "fullgrad": "FullGrad",
    "random": "random order",
}
# Where each part is reproduced at full size, from the clone (MNIST through
# tensorflow-datasets; offline, add --config.data.source=idx:DIR with MNIST-format files).
FULL_SIZE = {
    "shift": ".venv/bin/python -m experiments.shift_manipulation",
    "score_matching": ".venv/bin/python -m experiments.score_matching",
    "sanity": ".venv/bin/python -m experiments.sanity_checks",
    "methods": ".venv/bin/python -m experiments.fullgrad",
}
# The sanity verdict's thresholds (the note's picture for gradient x input and IG with every
# layer random): the signed correlation near 0, the absolute one high, spearman_nz between.
SIGNED_NEAR_ZERO, ABSOLUTE_HIGH = 0.2, 0.8
INPUT_METHODS = ("gradient_x_input", "integrated_gradients")
OBJECTIVE_NAMES = {
    "none": "cross-entropy",
    "score_matching": "+ score matching",
    "anti_score_matching": "+ anti-score-matching",
    "gradient_norm": "+ gradient norm",
}


def write(
    workdir,
    config,
    results: dict,
    *,
    images,
    labels,
    predictions,
    gradients,
    shift_maps: dict,
    score_matching_maps: dict,
    sanity_images,
    sanity_maps: list,
    method_maps: dict,
) -> Path:
    """Writes the tour's results, figures and report into ``workdir``; returns ``report.md``.

    Args:
      workdir: the run's folder.
      config: the run's config.
      results: the dict returned by ``experiments.demo.run``.
      images: ``[N, H, W, C]`` the test images shown in the figures of maps (one per class).
      labels, predictions: ``[N]`` their labels and the classifier's predictions.
      gradients: ``[N, H, W, C]`` the input-gradients of the predicted logits.
      shift_maps: ``before``, ``after`` (``[N, H, W, C]``, the shift's class) and
        ``target_map`` (``[H, W, C]``).
      score_matching_maps: ``{objective: [N, H, W, C]}`` label gradients of the pair.
      sanity_images: ``[M, H, W, C]`` the images of ``sanity_maps``.
      sanity_maps: one ``[M, H, W, C]`` map per randomization stage.
      method_maps: ``{method: [N, H, W, C]}`` of the predicted class.
    """
    workdir = report.workdir_path(workdir)
    report.write_json(workdir / "results.json", results, indent=2)
    columns = [f"y={int(a)} pred={int(b)}" for a, b in zip(labels, predictions, strict=True)]
    report.attribution_figure(
        workdir / "input_gradients.png",
        images,
        [gradients],
        row_titles=["input-gradient"],
        column_titles=columns,
        title="Signed input-gradients of the predicted logit",
    )
    c = results["shift"]["target_class"]
    m = np.broadcast_to(np.asarray(shift_maps["target_map"]), np.shape(images))
    report.attribution_figure(
        workdir / "shift.png",
        images,
        [shift_maps["before"], shift_maps["after"], m],
        row_titles=[f"grad f_{c}", f"grad (f_{c} + g)", "the pattern m"],
        title=f"Class {c}'s gradient before and after the shift (same softmax)",
    )
    _score_matching_figures(workdir, results["score_matching"], images, score_matching_maps)
    _sanity_figures(workdir, results["sanity"], sanity_images, sanity_maps)
    names = list(method_maps)
    report.attribution_figure(
        workdir / "methods.png",
        images,
        [method_maps[m] for m in names],
        row_titles=[METHOD_NAMES[m] for m in names],
        column_titles=columns,
        title="Attribution methods, predicted class",
    )
    _perturbation_figure(workdir / "perturbation.png", results["methods"], [*names, "random"])
    return report.write_report(workdir, _blocks(config, results, names))


def _score_matching_figures(workdir, sm, images, maps):
    objectives = ["none", sm["objective"]]
    report.curves(
        workdir / "score_matching.png",
        [
            report.Panel(
                [
                    report.Curve(sm["sigmas"], sm[o][stat], f"{OBJECTIVE_NAMES[o]}, {name}", style)
                    for o in objectives
                    for stat, name, style in (
                        ("density_ratio", "mean", "o-"),
                        ("density_ratio_median", "median", "s--"),
                    )
                ],
                title="density ratio E[p(x + eta | y)] / p(x | y)",
                xlabel="noise sigma",
                ylabel="over test images",
                xscale="log",
                yscale="log",
                hline=1.0,
            )
        ],
        panel_size=(5.5, 4.0),
    )
    report.attribution_figure(
        workdir / "score_matching_gradients.png",
        images,
        [maps[o] for o in objectives],
        row_titles=[OBJECTIVE_NAMES[o] for o in objectives],
        title="Input-gradients of the label's logit",
    )


def _sanity_figures(workdir, sanity, images, maps):
    rows, stages = sanity["table"], sanity["stages"]
    methods = list(dict.fromkeys(r["method"] for r in rows))
    panels = [report.sanity_panel(rows, stages, m, METHOD_NAMES[m], METRIC_NAMES) for m in methods]
    report.curves(workdir / "sanity.png", panels, panel_size=(4.2, 3.6))
    report.attribution_figure(
        workdir / "sanity_maps.png",
        images,
        maps,
        row_titles=stages,
        title=f"Signed {METHOD_NAMES[sanity['maps_method']]}, trained then cascading randomization",
    )


def _perturbation_figure(path, methods, names):
    report.curves(
        path,
        [
            report.Panel(
                [
                    report.Curve(
                        methods["fractions"],
                        methods[m]["accuracy"],
                        METHOD_NAMES[m],
                        style="k--" if m == "random" else "o-",
                    )
                    for m in names
                ],
                title="pixel perturbation, most salient first",
                xlabel="fraction of pixels replaced by the training mean",
                ylabel="test accuracy",
            )
        ],
        panel_size=(5.5, 4.0),
    )


def shift_verdict(shift: dict) -> str:
    """Whether the closed-form shift kept the classifier and replaced the gradients."""
    kept = shift["same_predictions"] and shift["softmax_max_abs_diff"] < 1e-5
    replaced = shift["cosine_to_map_after"] > 0.99 and shift["gradient_max_abs_error"] < 1e-4
    if kept and replaced:
        return (
            "Reproduced: the same predictions and, to float precision, the same probabilities; "
            "the class's gradient is the pattern on every image."
        )
    return (
        "Not reproduced here: "
        + ("the probabilities or predictions moved" if not kept else "")
        + (" and " if not kept and not replaced else "")
        + ("the gradient is not the pattern" if not replaced else "")
        + " (see the table)."
    )


def score_matching_verdict(sm: dict) -> str:
    """The paper's prediction for score matching, checked at the largest noise level.

    The other objectives have no prediction in this tour: their numbers are reported as
    measured.
    """
    o, i = sm["objective"], len(sm["sigmas"]) - 1
    base, reg = sm["none"]["density_ratio"][i], sm[o]["density_ratio"][i]
    s = sm["sigmas"][i]
    if o != "score_matching":
        return (
            f"At sigma {s:g} the density ratio is {reg:.3g} with {OBJECTIVE_NAMES[o]} and "
            f"{base:.3g} with cross-entropy alone (the tour checks the paper's prediction "
            "for score matching only)."
        )
    if reg < 1.0 < base:
        return (
            f"As in the paper, at sigma {s:g} noise lowers the density of the score-matched "
            f"model (mean ratio {reg:.3g}: the data sit at peaks) and raises the baseline's "
            f"({base:.3g}: noisy inputs get more density than real ones)."
        )
    return (
        f"The paper's density-ratio contrast did not show in this run (at sigma {s:g}: "
        f"{reg:.3g} with score matching, {base:.3g} without)."
    )


def sanity_verdict(by: dict, last: str, methods: list[str]) -> str:
    """The note's picture, checked for gradient x input and IG with every layer random."""
    out = []
    for m in methods:
        s, a, nz = (by[(last, m, k)]["mean"] for k in METRICS)
        numbers = f"signed {s:.2f}, absolute {a:.2f}, spearman_nz {nz:.2f}"
        if m in INPUT_METHODS:
            holds = abs(s) < SIGNED_NEAR_ZERO and a > ABSOLUTE_HIGH and s < nz < a
            out.append(
                f"{METHOD_NAMES[m]}: {numbers}: "
                + ("the note's picture" if holds else "not the note's picture")
            )
        else:
            out.append(f"{METHOD_NAMES[m]}: {numbers}")
    return "With every layer random, " + "; ".join(out) + "."


def perturbation_verdict(methods: dict, names: list[str]) -> str:
    """Which rankings beat the random order: by area, at every fraction, and which curves rise."""
    rnd = np.asarray(methods["random"]["accuracy"])
    by_area = [m for m in names if methods[m]["auc"] < methods["random"]["auc"]]
    everywhere = [m for m in names if np.all(np.asarray(methods[m]["accuracy"])[1:] < rnd[1:])]
    worse = [m for m in names if methods[m]["auc"] >= methods["random"]["auc"]]
    rising = [m for m in names if np.any(np.diff(np.asarray(methods[m]["accuracy"])) > 0.02)]
    best = min(names, key=lambda m: methods[m]["auc"])
    text = [
        f"Lowest area: {METHOD_NAMES[best]}.",
        "Below the random order by area: " + (_names(by_area) or "none") + ";",
        "at every fraction: " + (_names(everywhere) or "none") + ".",
    ]
    if worse:
        text.append(f"No better than the random order: {_names(worse)}.")
    if rising:
        text.append(
            f"The accuracy rises again as more pixels are replaced for {_names(rising)}: "
            "probably because their rankings replace the digit's strokes first, and a digit "
            "drawn in the fill value on its black background can be recognised again (the "
            "fill is not 'no information', ROAR's argument); for them the area alone misleads."
        )
    return " ".join(text)


def _names(methods) -> str:
    return ", ".join(METHOD_NAMES[m] for m in methods)


def _blocks(config, results, names) -> list[str]:
    t = config.train
    shift, sm, sanity, methods = (
        results["shift"],
        results["score_matching"],
        results["sanity"],
        results["methods"],
    )
    c = shift["target_class"]
    blocks = [
        report.title("jaxgrad demo: a tour of the papers' headline results"),
        report.paragraph(
            f"Classifier: `{config.model.name}` ({config.model.activation}) trained on "
            f"`{report.source_name(config.data.source)}` for {results['steps']} steps of batch "
            f"{results['batch_size']} with {t.optimizer} (lr {t.learning_rate}) on "
            f"{results['devices']} device(s): test accuracy {results['test_accuracy']:.4f} "
            f"(loss {results['test_loss']:.4f}) on {results['num_test']} held-out images. "
            f"The tour took {results['seconds']:.0f} s in all, compilation included."
        ),
        report.image("input_gradients.png", "input-gradients"),
        report.paragraph(
            "Each map is summed over channels, divided by the 99.5th percentile of its absolute "
            "value and clipped to [-1, 1]: red where increasing the pixel raises the logit, "
            "blue where it lowers it."
        ),
        # 1. Shift
        report.heading("1. Same classifier, any gradients: the shift manipulation"),
        report.paragraph(
            "Softmax is unchanged when the same function g(x) is added to every logit, so "
            "the input-gradients of the logits are not determined by the classifier "
            f"(Srinivas & Fleuret 2021, Sec. 3). With g(x) = <m, x> - f_{c}(x), class {c}'s "
            f"gradient becomes the pattern m (`{config.shift.target_map}`) on every image."
        ),
        report.table(
            ["measure", f"{shift['images']} test images"],
            [
                [
                    "largest change of any softmax probability",
                    f"{shift['softmax_max_abs_diff']:.1e}",
                ],
                ["same predictions", "yes" if shift["same_predictions"] else "NO"],
                [f"mean cosine(grad f_{c}, m) before", f"{shift['cosine_to_map_before']:.3f}"],
                [f"mean cosine(grad f_{c}, m) after", f"{shift['cosine_to_map_after']:.3f}"],
                ["largest error of the new gradient", f"{shift['gradient_max_abs_error']:.1e}"],
            ],
        ),
        report.image("shift.png", "shift"),
        report.paragraph(
            shift_verdict(shift),
            f"Full size (a learned shift and a fine-tuned model as well): `{FULL_SIZE['shift']}`.",
        ),
    ]
    # 2. Score matching
    o = sm["objective"]
    base, reg = sm["none"], sm[o]
    pooling = config.score_matching.model.get("pooling", "reshape")
    blocks += [
        report.heading("2. The implicit density: score matching against cross-entropy"),
        report.paragraph(
            "A classifier's logits define log p(x | y) = f_y(x) - log Z, whose score is the "
            "input-gradient. Score matching (Eq. 4: cross-entropy + lambda x (trace of the "
            "Hessian + 1/2 |grad|^2 + mu x stability)) aligns that density with the data. "
            f"Both models are `{config.score_matching.model.name}` with "
            f"{config.score_matching.model.activation} and `{pooling}` pooling, from the same "
            "initialisation and batch order. The density ratio E[exp(f_y(x + eta) - f_y(x))] "
            "over Gaussian noise eta measures whether the data sit at peaks of the density "
            f"(below 1) or not; traces are exact (every direction) on {sm['trace_images']} "
            "test images."
        ),
        report.table(
            [
                "objective",
                "test acc.",
                "mean Hessian trace",
                *(f"density ratio, sigma {s:g}: mean / median" for s in sm["sigmas"]),
            ],
            [
                [
                    OBJECTIVE_NAMES[k],
                    f"{sm[k]['test_accuracy']:.4f}",
                    f"{sm[k]['hessian_trace_mean']:.3g}",
                    *(
                        f"{r:.3g} / {q:.3g}"
                        for r, q in zip(
                            sm[k]["density_ratio"], sm[k]["density_ratio_median"], strict=True
                        )
                    ),
                ]
                for k in ("none", o)
            ],
        ),
        report.image("score_matching.png", "density ratio"),
        report.image("score_matching_gradients.png", "gradients of the pair"),
        report.paragraph(
            score_matching_verdict(sm),
            f"The mean Hessian trace is {reg['hessian_trace_mean']:.3g} against "
            f"{base['hessian_trace_mean']:.3g} for the baseline"
            + (
                " (more negative: a sharper peak)."
                if reg["hessian_trace_mean"] < base["hessian_trace_mean"]
                else ": not more negative in this run (the README's Results section gives "
                "the MNIST-size measurements)."
            ),
            "Full size (MNIST, with GAN-test and pixel perturbation): "
            f"`{FULL_SIZE['score_matching']}`.",
        ),
    ]
    # 3. Sanity
    rows = sanity["table"]
    by = {(r["stage"], r["method"], r["metric"]): r for r in rows}
    stages = sanity["stages"]
    last = stages[-1]
    sanity_methods = list(dict.fromkeys(r["method"] for r in rows))
    blocks += [
        report.heading("3. Sanity checks: signed, absolute and spearman_nz"),
        report.paragraph(
            "Cascading randomization re-initialises the layers from the output down "
            f"(std {config.sanity.stddev}); each stage's map is compared with the trained "
            f"model's on {config.sanity.num_images} test images. Adebayo et al. found absolute "
            "maps nearly unchanged; Sundararajan & Taly showed that the signed rank "
            "correlation falls to about 0 while the absolute one stays high because the input "
            "dominates both, and proposed spearman_nz (ranks over the input's non-zero pixels)."
        ),
        report.table(
            ["method", *(f"{METRIC_NAMES[m]}, all layers random" for m in METRICS)],
            [
                [
                    METHOD_NAMES[m],
                    *(report.fmt_interval(by[(last, m, metric)]) for metric in METRICS),
                ]
                for m in sanity_methods
            ],
        ),
        report.image("sanity.png", "rank correlations per stage"),
        report.image("sanity_maps.png", "maps per stage"),
        report.paragraph(
            "Means over images with 99% intervals.",
            sanity_verdict(by, last, sanity_methods),
            "Full size (MNIST, the note's control and IG's pixel perturbation): "
            f"`{FULL_SIZE['sanity']}`.",
        ),
    ]
    # 4. Methods
    blocks += [
        report.heading("4. Attribution methods side by side, and pixel perturbation"),
        report.paragraph(
            "The same images explained by each method (predicted class). Pixel perturbation "
            f"on {methods['images']} test images: the most salient pixels (sum of |map| over "
            f"channels, ties broken at random) are replaced by the training mean "
            f"({methods['fill']:.3f}) and the test accuracy is measured; a curve that falls "
            "faster than the random order's means the ranking found pixels the model relies on."
        ),
        report.image("methods.png", "methods"),
        report.table(
            ["method", *(f"{f:g}" for f in methods["fractions"]), "area"],
            [
                [
                    METHOD_NAMES[m],
                    *(f"{a:.3f}" for a in methods[m]["accuracy"]),
                    f"{methods[m]['auc']:.4f}",
                ]
                for m in [*names, "random"]
            ],
        ),
        report.image("perturbation.png", "pixel perturbation"),
        report.paragraph(
            perturbation_verdict(methods, names),
            f"Full size (FullGrad's pixel perturbation and ROAR): `{FULL_SIZE['methods']}`.",
        ),
        report.heading("Time and files"),
        report.table(
            ["part", "seconds"],
            [[k, f"{v:.1f}"] for k, v in results["seconds_per_part"].items()],
        ),
        report.paragraph(
            "Files: `config.json`, `metrics.jsonl` (the classifier's training and evaluation "
            "rows), `results.json` (every number above), the figures, `checkpoints/` and "
            "`score_matching/<objective>/` (orbax checkpoints and metrics; rerunning with the "
            "same workdir resumes from them). The full-size commands run from the clone; "
            "offline, add `--config.data.source=idx:DIR` with MNIST-format files."
        ),
    ]
    return blocks
