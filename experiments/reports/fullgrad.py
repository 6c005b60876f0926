"""FullGrad's evaluations: ``results.json``, the CSV files, the figures and ``report.md``.

Writes ``perturbation.csv`` (fill x method x k), ``roar.csv`` (method x k x seed),
``perturbation.png`` (a panel per fill), ``roar.png``, ``maps.png`` (each method's per-pixel
salience on the first test images) and ``report.md``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from experiments import report

NAMES = {
    "fullgrad": "FullGrad",
    "gradient": "abs(gradient)",
    "gradient_x_input": "gradient x input",
    "integrated_gradients": "Integrated Gradients",
    "smoothgrad": "SmoothGrad",
    "gradcam": "Grad-CAM",
    "random": "random",
}


# A mean fractional change this small is float noise, not a removal: on a GPU the perturbed
# batch runs through a differently batched program than the reference logit and differs by
# about 1e-5 on a few images even where the input is unchanged (on a CPU it is exactly 0).
UNTOUCHED = 1e-6
FILL_NAMES = {"0": " (black)", "0.5": " (grey)"}


def _pct(k: float) -> str:
    return f"{100 * k:g}%"


def write(workdir, config, results: dict, *, images, maps) -> Path:
    """Writes the files into ``workdir``; returns ``report.md``.

    Args:
      workdir: the run's folder.
      config: the run's config.
      results: the dict ``experiments.fullgrad.run`` returns.
      images: ``[N, H, W, C]`` the first test images.
      maps: one ``[N, H, W, 1]`` salience per method of ``config.evaluation.methods``.
    """
    workdir = report.workdir_path(workdir)
    report.write_json(workdir / "results.json", results)
    p, r = results["perturbation"], results["roar"]
    ks = p["fractions"]
    report.write_csv(
        workdir / "perturbation.csv",
        ["fill", "method", "k", "fractional_change", "se", "median", "unchanged_share",
         "prediction_kept"],
        [
            [fill, name, k, row["fractional_change"][i], row["fractional_change_se"][i],
             row["fractional_change_median"][i], row["unchanged_share"][i],
             row["prediction_kept"][i]]
            for fill, rows in p["fills"].items()
            for name, row in rows.items()
            for i, k in enumerate(ks)
        ],
    )  # fmt: skip
    report.write_csv(
        workdir / "roar.csv",
        ["method", "k", "seed", "accuracy"],
        [["unmasked", 0.0, s, a] for s, a in enumerate(r["reference_accuracy"])]
        + [
            [name, k, s, acc[i]]
            for name, c in r["curves"].items()
            for s, acc in enumerate(c["accuracy_per_seed"])
            for i, k in enumerate(r["fractions"])
        ],
    )
    panels = [
        report.Panel(
            [
                report.Curve(
                    [100 * k for k in ks],
                    row["fractional_change"],
                    NAMES.get(name, name),
                    yerr=row["fractional_change_se"],
                    style="k--" if name == "random" else "o-",
                )
                for name, row in rows.items()
            ],
            title=f"Pixel perturbation, fill {fill} (lower is better)",
            xlabel="k, % of pixels removed (least salient first)",
            ylabel="abs fractional change of the logit",
            xscale="log" if max(ks) >= 10 * min(ks) else "linear",
        )
        for fill, rows in p["fills"].items()
    ]
    report.curves(workdir / "perturbation.png", panels)
    ref = float(np.mean(r["reference_accuracy"]))
    report.curves(
        workdir / "roar.png",
        [
            report.Panel(
                [
                    report.Curve(
                        [0.0, *(100 * k for k in r["fractions"])],
                        [ref, *c["accuracy"]],
                        NAMES.get(name, name),
                        style="k--" if name == "random" else "o-",
                    )
                    for name, c in r["curves"].items()
                ],
                title="ROAR: most salient removed, retrained (lower is better)",
                xlabel="k, % of pixels removed",
                ylabel="test accuracy after retraining",
            )
        ],
        panel_size=(6, 4),
    )
    report.attribution_figure(
        workdir / "maps.png",
        images,
        maps,
        row_titles=[NAMES.get(m, m) for m in config.evaluation.methods],
        title="Per-pixel salience (sum over channels of abs), predicted class",
    )
    return report.write_report(workdir, _blocks(config, results))


def _retrainings(n: int) -> str:
    if n == 1:
        return "one retraining per mask (no spread: a check of the flow, not of the claim)"
    return f"mean ± SE over {n} retrainings per mask"


def _mean_se(values: np.ndarray) -> str:
    if len(values) < 2:
        return f"{values.mean():.4f}"
    return f"{values.mean():.4f} ± {values.std(ddof=1) / np.sqrt(len(values)):.4f}"


def _perturbation_table(rows: dict, ks) -> str:
    return report.table(
        [
            "method",
            *(f"k = {_pct(k)}" for k in ks),
            "share of images with the logit exactly unchanged at the largest k",
        ],
        [
            [NAMES.get(name, name)]
            + [
                f"{row['fractional_change'][i]:.4f} ± {row['fractional_change_se'][i]:.4f}"
                for i in range(len(ks))
            ]
            + [f"{row['unchanged_share'][-1]:.3f}"]
            for name, row in rows.items()
        ],
    )


def verdicts(results: dict) -> dict:
    """What the run says about the paper's two claims, computed from its numbers.

    ``perturbation[fill]``: the methods ranked by their mean fractional change over k (lowest
    first), the methods whose mean change stays within float noise (:data:`UNTOUCHED`) at
    every k, and whether FullGrad is lowest at every k; ``roar``: the methods ranked by their mean accuracy over k (lowest first) and
    whether FullGrad is among the two lowest (the paper: FullGrad and Grad-CAM best).
    """
    out = {"perturbation": {}}
    for fill, rows in results["perturbation"]["fills"].items():
        mean = {n: float(np.mean(row["fractional_change"])) for n, row in rows.items()}
        ranked = sorted(mean, key=mean.get)
        per_k = np.asarray([rows[n]["fractional_change"] for n in rows])
        names = list(rows)
        out["perturbation"][fill] = {
            "ranked": ranked,
            "untouched": [
                n for n, row in rows.items() if max(row["fractional_change"]) <= UNTOUCHED
            ],
            "fullgrad_lowest_at_every_k": "fullgrad" in rows
            and all(names[j] == "fullgrad" for j in np.argmin(per_k, axis=0)),
        }
    curves = results["roar"]["curves"]
    mean = {n: float(np.mean(c["accuracy"])) for n, c in curves.items()}
    ranked = sorted(mean, key=mean.get)
    out["roar"] = {"ranked": ranked, "fullgrad_in_best_two": "fullgrad" in ranked[:2]}
    return out


def _blocks(config, results) -> list[str]:
    e, p, r = config.evaluation, results["perturbation"], results["roar"]
    v = verdicts(results)
    ks = p["fractions"]

    def named(ns):
        ns = [NAMES.get(n, n) for n in ns]
        return " and ".join([", ".join(ns[:-1]), ns[-1]] if len(ns) > 1 else ns) or "none"

    blocks = [
        report.title("FullGrad's evaluations: pixel perturbation and ROAR"),
        report.paragraph(
            f"{report.describe_model(config.model)} on {report.source_name(config.data.source)}, "
            f"{config.train.epochs} epochs: test accuracy {results['test_accuracy']:.4f}.",
            "Every map explains the predicted class; pixels are ranked by the sum over channels "
            f"of the map's absolute values. IG: {e.ig_steps} Gauss-Legendre nodes from a black "
            f"baseline; SmoothGrad: {e.smoothgrad_samples} samples of noise "
            f"{e.smoothgrad_noise} x the value range; Grad-CAM at `{e.gradcam_layer}`.",
        ),
        report.heading("Pixel perturbation (least salient removed)"),
        report.paragraph(
            f"The k% least salient pixels of the first {p['num_images']} test images are "
            "replaced by the fill; mean ± SE over images of abs(f(x) - f(x~)) / abs(f(x)) for "
            "the predicted logit f (lower is better). Pixels of equal salience are removed "
            + ("in random order." if e.get("ties", "stable") == "random" else "in raster order.")
            + " The paper (ImageNet, VGG-16, black fill) finds FullGrad lowest among the "
            "input-gradient, IG, SmoothGrad, Grad-CAM and random; its results are figures only, "
            "so no number is quoted.",
        ),
    ]
    for fill, rows in p["fills"].items():
        verdict = v["perturbation"][fill]
        blocks += [
            report.paragraph(f"**Fill {fill}{FILL_NAMES.get(fill, '')}.**"),
            _perturbation_table(rows, ks),
            report.paragraph(
                f"Ranked by the mean over k (best first): {named(verdict['ranked'])}.",
                "Methods whose mean change stays within float noise (at most "
                f"{UNTOUCHED:g}) at every k: {named(verdict['untouched'])}.",
                "FullGrad is lowest at every k."
                if verdict["fullgrad_lowest_at_every_k"]
                else "FullGrad is not lowest at every k.",
            ),
        ]
    black = v["perturbation"].get("0")
    named_fills = ", ".join(f for f in p["fills"] if f != "0") or "none run"
    if black is not None and black["untouched"]:
        blocks.append(
            report.paragraph(
                f"With a black fill, {named(black['untouched'])} changed nothing at any k: "
                "their maps are exactly 0 on the black background (gradient x input is "
                "gradient x 0 there, and IG from a black baseline integrates over a zero "
                "path), so their least salient pixels are background pixels, and filling "
                "them with black removes nothing. At this size the black fill measures how "
                "much of a method's map lies on the background, not how faithful it is; a "
                f"fill off the background ({named_fills}) removes something from every pixel "
                "and is the one that tests the paper's claim here."
            )
        )
    rs = r["fractions"]
    ref = r["reference_accuracy"]
    blocks += [
        report.image("perturbation.png", "pixel perturbation curves"),
        report.heading("ROAR (most salient removed, retrained)"),
        report.paragraph(
            f"The k% most salient pixels of every training and test image are replaced by the "
            f"training set's mean ({r['fill_value']:.4f}); a fresh model is trained on the "
            f"masked training set for {e.roar.train.get('epochs', config.train.epochs)} epochs "
            f"and tested on the masked test set; {_retrainings(len(ref))} (a lower accuracy is "
            f"better). The unmasked retraining reaches {np.mean(ref):.4f}. The paper (CIFAR-100, "
            "9-layer VGG) finds FullGrad and Grad-CAM best, above the input-gradient, IG, "
            "SmoothGrad and random (figures only).",
        ),
        report.table(
            ["method", *(f"k = {_pct(k)}" for k in rs), "mean"],
            [
                [NAMES.get(name, name)]
                + [_mean_se(np.asarray(c["accuracy_per_seed"])[:, i]) for i in range(len(rs))]
                + [f"{np.mean(c['accuracy']):.4f}"]
                for name, c in r["curves"].items()
            ],
        ),
        report.paragraph(
            f"Ranked by the mean accuracy over k (best first): {named(v['roar']['ranked'])}.",
            "FullGrad is among the two best."
            if v["roar"]["fullgrad_in_best_two"]
            else "FullGrad is not among the two best.",
        ),
        report.image("roar.png", "ROAR curves"),
        report.image("maps.png", "each method's salience"),
        report.paragraph(f"Run time: {results['seconds'] / 60:.1f} min."),
    ]
    return blocks
