"""The sanity checks' outputs: tables, control, figures and ``report.md``.

Writes ``results.json``, ``table.json`` / ``table.csv`` (stage x method x metric, means and
99% intervals over images), ``control.json``, ``curves.png``, ``maps.png`` and
``report.md``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from experiments import report

METRICS = report.SANITY_METRICS
# The pixel-perturbation orders, as the report's rows name them.
ORDERS = {
    "most": "most salient first",
    "random": "random order",
    "least": "least salient first",
}


def write(workdir, config, results: dict, *, images, maps) -> Path:
    """Writes the tables, figures and report into ``workdir``; returns ``report.md``.

    Args:
      workdir: the run's folder.
      config: the run's config.
      results: the dict returned by ``experiments.sanity_checks.run``.
      images: ``[N, H, W, C]`` the test images of ``maps.png`` (the first N of those
        attributed).
      maps: one ``[N, H, W, C]`` signed IG map per stage of ``results["stages"]``.
    """
    workdir = report.workdir_path(workdir)
    rows = results["table"]
    report.write_json(workdir / "table.json", rows)
    header = list(rows[0])
    report.write_csv(workdir / "table.csv", header, [[r[k] for k in header] for r in rows])
    report.write_json(workdir / "control.json", results["control"])
    report.attribution_figure(
        workdir / "maps.png",
        images,
        maps,
        row_titles=results["stages"],
        title="Signed IG, trained then cascading randomization",
    )
    _curves(workdir / "curves.png", rows, results["stages"])
    path = report.write_report(workdir, _blocks(config, results, num_shown=len(images)))
    report.write_json(workdir / "results.json", results)
    return path


def _curves(path, rows, stages):
    """IG's rank correlations (with bands) and its raw sum, per stage."""
    ig = {(r["stage"], r["metric"]): r for r in rows if r["method"] == "integrated_gradients"}
    xs = np.arange(len(stages))
    report.curves(
        path,
        [
            report.sanity_panel(
                rows,
                stages,
                "integrated_gradients",
                "Integrated Gradients, cascading randomization",
            ),
            report.Panel(
                [report.Curve(xs, [ig[(s, "attribution_sum")]["mean"] for s in stages], color="k")],
                title="mean sum of raw IG (= logit change)",
                xticks=stages,
            ),
        ],
        panel_size=(5, 3.6),
    )


def _blocks(config, results, *, num_shown):
    sanity = config.evaluation.sanity
    rows = results["table"]
    by = {(r["stage"], r["method"], r["metric"]): r for r in rows}
    stages = results["stages"]
    methods = sorted({r["method"] for r in rows})
    blocks = [
        report.title("Sanity checks by cascading randomization"),
        report.paragraph(
            f"CNN trained on `{report.source_name(config.data.source)}` (test accuracy "
            f"{results['test_accuracy']:.4f}); {sanity.num_images} test images, target = label, "
            "cascading re-initialisation from the output layer (truncated normal, std "
            f"{sanity.stddev}); {results['seconds']:.0f} s in all."
        ),
        report.paragraph(
            "Means over images with 99% intervals. The note (Sundararajan & Taly) reports, for "
            "IG: absolute Spearman near 1 at every stage, signed Spearman falling to about 0, "
            "spearman_nz dropping sharply after the output layer and plateauing near 0.4, and "
            "the sum of raw IG falling toward 0."
        ),
    ]
    for metric in (*METRICS, "attribution_sum"):
        blocks += [
            report.heading(metric),
            report.table(
                ["method", *stages],
                [[m, *(report.fmt_interval(by[(s, m, metric)]) for s in stages)] for m in methods],
            ),
        ]
    blocks += [
        report.heading("Control: spearman_nz of x * r1 against x * r2"),
        report.paragraph(
            "The note's Remark 1 gives 0.424, 99% CI [0.413, 0.437], without naming the "
            "distribution of r; the value depends on it:"
        ),
        report.table(
            ["r", "mean", "99% interval", "pairs"],
            [
                [name, f"{v['mean']:.3f}", report.fmt_ci99(v), v["pairs"]]
                for name, v in results["control"].items()
            ],
        ),
    ]
    pp = results["perturbation"]
    blocks += [
        report.heading(
            f"Pixel perturbation with IG ({pp['num_images']} test images, pixels set to 0)"
        ),
        report.paragraph(
            "Test accuracy after removing a fraction of the pixels, ranked by sum |IG| over "
            "channels, or in random order (the control). If IG ranks the pixels by how much "
            "the prediction relies on them, removing the most salient first lowers the "
            "accuracy faster than removing random pixels (a curve and area below the random "
            "one), and removing the least salient first lowers it more slowly (above it)."
        ),
        report.table(
            ["order", *(f"{f:g}" for f in pp["fractions"]), "area"],
            [
                [
                    ORDERS[order],
                    *(f"{a:.3f}" for a in pp[order]["accuracy"]),
                    f"{pp[order]['auc']:.3f}",
                ]
                for order in ("most", "random", "least")
            ],
        ),
        report.image("curves.png", "curves"),
        report.paragraph(
            f"`maps.png`: signed IG of the first {num_shown} of the {sanity.num_images} test "
            "images (columns), for the trained network and after each stage of the "
            "randomization (rows)."
        ),
        report.image("maps.png", "maps"),
    ]
    return blocks
