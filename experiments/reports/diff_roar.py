"""DiffROAR on real data: ``results.json``, ``diff_roar.csv`` / ``.png`` and ``report.md``."""

from __future__ import annotations

from pathlib import Path

from experiments import report


def write(workdir, config, out: dict) -> Path:
    """Writes the results, the curves and the report into ``workdir``; returns ``report.md``.

    Args:
      workdir: the run's folder.
      config: the run's config.
      out: the dict returned by ``experiments.diff_roar.run``.
    """
    workdir = report.workdir_path(workdir)
    report.write_json(workdir / "results.json", out)
    d = config.evaluation.diff_roar
    units = "coordinates" if d.unit == "coordinate" else "pixels"
    report.diff_roar_files(workdir, out["diff_roar"], units=units)
    t = config.train
    attacks = list(next(iter(out["models"].values()))["robust_accuracy"])
    rows = [
        [
            name,
            _ball(m["pgd"]),
            f"{m['clean_accuracy']:.4f}",
            *(f"{m['robust_accuracy'][a]:.4f}" for a in attacks),
        ]
        for name, m in out["models"].items()
    ]
    fractions = list(d.fractions)
    curve_rows = [
        [name, str(len(r["top_k_accuracy_per_seed"]))] + [f"{v:+.3f}" for v in r["diff_roar"]]
        for name, r in out["diff_roar"].items()
    ]
    blocks = [
        report.title("DiffROAR of standard and robust models (Shah, Jain & Netrapalli 2021)"),
        report.paragraph(
            f"{report.describe_model(config.model)} on `{report.source_name(config.data.source)}` "
            f"({config.data.num_classes} classes); {t.epochs} epochs of {t.optimizer} "
            f"{t.learning_rate}, batch {t.batch_size}"
            + (", random crop and flip" if t.augment == "cifar" else "")
            + (f" (stopped after {t.max_steps} steps)" if t.max_steps else "")
            + f". {out['seconds']:.0f} s."
        ),
        report.bullets(
            "Attribution: |input-gradient| of the predicted class's logit, every training and "
            f"test image; {units} ranked {'channel by channel' if units == 'coordinates' else 'per pixel'}.",
            f"DiffROAR(k) = acc(top-k kept) - acc(bottom-k kept): fresh models retrained for "
            f"{d.epochs} epochs on each masked training set, the rest set to the training "
            f"set's mean ({out['fill_value']:.4f}); the final epoch's test accuracy.",
            "Control: a uniformly random ranking, redrawn for every run (expected DiffROAR 0).",
            "Robust accuracy: PGD from a random start on the first "
            f"{config.evaluation.attack_images} test images.",
        ),
        report.table(["model", "training ball", "clean acc.", *attacks], rows),
        report.table(["attribution", "runs", *(f"k={k:g}" for k in fractions)], curve_rows),
        report.paragraph(
            "The paper's claim: standard models' gradients give DiffROAR < 0 or about 0 "
            "(feature inversion), robust models' > 0, across data sets; the published "
            "CIFAR-10 curves lie within -0.09 to 0.28."
        ),
        *_leakage_blocks(out["diff_roar"], fractions),
        report.image("diff_roar.png", "DiffROAR curves"),
    ]
    return report.write_report(workdir, blocks)


def _leakage_blocks(curves: dict, fractions: list) -> list:
    """Bottom-k accuracy with the constant fill against ROAD's imputation, per attribution.

    A constant fill draws the mask's outline; when the masks are class-stereotyped the
    retrained model reads the class from it, so even the least salient pixels "predict"
    well. ROAD's imputation removes the outline. The leakage is gone where the bottom-k
    accuracy under ROAD is no higher than the random ranking's under ROAD.
    """
    pairs = [n for n in curves if not n.endswith(" + ROAD") and f"{n} + ROAD" in curves]
    if not pairs:
        return []
    rows, sentences = [], []
    control = curves.get("random + ROAD")
    for name in pairs:
        const, road = (
            curves[name]["bottom_k_accuracy"],
            curves[f"{name} + ROAD"]["bottom_k_accuracy"],
        )
        rows.append([name, *(f"{c:.3f} / {r:.3f}" for c, r in zip(const, road, strict=True))])
        if name == "random" or control is None:
            continue
        i = int(min(range(len(fractions)), key=lambda j: fractions[j]))  # the smallest k
        base = control["bottom_k_accuracy"][i]
        gone = road[i] <= base
        sentences.append(
            f"{name}: keeping the {fractions[i]:g} least salient share, {const[i]:.3f} with the "
            f"constant fill and {road[i]:.3f} with ROAD (a random ranking with ROAD: "
            f"{base:.3f}): "
            + ("none left above random" if gone else f"{road[i] - base:+.3f} above random remains")
            + f" ({len(curves[name]['bottom_k_accuracy_per_seed'])} retraining(s) each)."
        )
    return [
        report.paragraph(
            "Label leakage through the mask: bottom-k accuracy (the least salient share kept), "
            "constant fill / ROAD imputation. The leakage is gone where ROAD's bottom-k "
            "accuracy is no higher than a random ranking's under ROAD."
        ),
        report.table(["attribution", *(f"k={k:g}" for k in fractions)], rows),
        *([report.bullets(*sentences)] if sentences else []),
    ]


def _ball(pgd) -> str:
    if pgd is None:
        return "standard"
    return f"{pgd['norm']} {pgd['epsilon']:.4g} ({pgd['steps']} steps)"
