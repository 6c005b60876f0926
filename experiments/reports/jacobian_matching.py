"""Jacobian matching's outputs: ``results.json``, ``table.csv``, ``accuracy.png`` and ``report.md``."""

from __future__ import annotations

from pathlib import Path

from experiments import report


def _pm(mean: float, se: float | None, digits: int = 4) -> str:
    return f"{mean:.{digits}f}" + ("" if se is None else f" ± {se:.{digits}f}")


def write(workdir, config, results: dict) -> Path:
    """Writes the figures and the report into ``workdir``; returns ``report.md``.

    Args:
      workdir: the run's folder.
      config: the run's config.
      results: the dict returned by ``experiments.jacobian_matching.run``.
    """
    workdir = report.workdir_path(workdir)
    d = config.distill
    summary = results["summary"]
    report.write_json(workdir / "results.json", results, indent=2)
    report.write_csv(
        workdir / "table.csv",
        [
            "method",
            "size",
            "n",
            "accuracy",
            "accuracy_se",
            "gain_over_ce",
            "gain_over_ce_se",
            "teacher_agreement",
            "jacobian_distance",
        ],
        [
            [
                r["method"],
                r["size"],
                r["n"],
                r["accuracy"],
                r["accuracy_se"],
                r.get("gain_over_ce"),
                r.get("gain_over_ce_se"),
                r["teacher_agreement"],
                r["jacobian_distance"],
            ]
            for r in summary
        ],
    )
    sizes = list(d.sizes)
    panels = []
    for name, label in (("accuracy", "test accuracy"), ("jacobian_distance", "Jacobian distance")):
        curves = []
        for method in d.methods:
            rows = {r["size"]: r for r in summary if r["method"] == method}
            curves.append(
                report.Curve(
                    sizes,
                    [rows[s][name] for s in sizes],
                    label=method,
                    yerr=[rows[s][f"{name}_se"] or 0.0 for s in sizes],
                    style="o-",
                )
            )
        panels.append(
            report.Panel(
                curves,
                title=label,
                xlabel="training examples",
                ylabel=label,
                xscale="log",
                legend_size=7,
            )
        )
    figure = report.curves(workdir / "accuracy.png", panels)
    header = [
        "examples",
        "method",
        "test accuracy",
        "gain over CE (paired)",
        "agreement with teacher",
        "Jacobian distance",
    ]
    rows = [
        [
            r["size"],
            r["method"],
            _pm(r["accuracy"], r["accuracy_se"]),
            "" if r["method"] == "cross_entropy" else _pm(r["gain_over_ce"], r["gain_over_ce_se"]),
            _pm(r["teacher_agreement"], r["teacher_agreement_se"]),
            _pm(r["jacobian_distance"], r["jacobian_distance_se"], 3),
        ]
        for r in summary
    ]
    return report.write_report(
        workdir,
        [
            report.title("Jacobian matching (Srinivas & Fleuret 2018)"),
            report.paragraph(
                f"Teacher: {report.describe_model(config.model.teacher)} trained on "
                f"{results['train_examples']} examples of {report.source_name(config.data.source)}, "
                f"test accuracy {results['teacher_accuracy']:.4f} on {results['test_examples']} "
                "test images.",
                f"Students: {report.describe_model(config.model.student)}, {d.steps} steps each on a "
                f"random subset (the same for every method of a repeat), {d.seeds} repeats; "
                f"alpha {d.alpha}, temperature {d.temperature}, beta {d.beta}, sigma {d.sigma}.",
                "Mean ± standard error over repeats; the gain over cross-entropy is paired by "
                "repeat. The Jacobian distance is the paper's penalty (l2-normalised input-gradients "
                "of the label, squared distance; 0 = aligned, 2 = orthogonal) between student and "
                f"teacher on {config.evaluation.gradient_images} test images.",
            ),
            report.table(header, rows),
            report.image(figure, "accuracy and Jacobian distance"),
            report.paragraph(
                "The paper reports this comparison on CIFAR-100 and for transfer learning; its "
                "numbers for an MNIST-sized run are not in our sources, so no paper column is "
                "given."
            ),
        ],
    )
