"""The synthetic check's outputs: ``results.json`` and ``report.md``."""

from __future__ import annotations

from pathlib import Path

from experiments import report


def write(workdir, config, results: dict) -> Path:
    """Writes the results and the report into ``workdir``; returns ``report.md``."""
    workdir = report.workdir_path(workdir)
    report.write_json(workdir / "results.json", results, indent=2)
    m, paper = results["models"], results["paper"]
    rows = []
    for name, key, fmt in (
        ("Pr[argmin_j abs(g_j) = signal coordinate]", "argmin_is_signal", "{:.3f}"),
        ("Pr[argmax_j abs(g_j) = signal coordinate]", "argmax_is_signal", "{:.3f}"),
        ("AQ(A_G, 1) = Pr[argmax] - Pr[argmin]", "aq", "{:+.3f}"),
        ("mean abs(cos(x, g))", "abs_cos", "{:.3f}"),
    ):
        rows.append(
            [name]
            + [fmt.format(m[k][key]) for k in ("standard", "robust")]
            + [f"{paper['standard'][key]} / {paper['robust'][key]}"]
        )
    rows.append(
        ["test accuracy", f"{m['standard']['test_accuracy']:.3f}",
         f"{m['robust']['test_accuracy']:.3f}", "1.0 / 1.0 (stated)"]
    )  # fmt: skip
    rows.append(
        ["ours: DiffROAR at one coordinate (retrained; top / bottom kept accuracy)"]
        + [
            f"{m[k]['diff_roar']:+.3f}"
            + (
                ""
                if m[k]["diff_roar_se"] != m[k]["diff_roar_se"]
                else f" ± {m[k]['diff_roar_se']:.3f}"
            )
            + f" ({m[k]['top_1_kept_accuracy']:.3f} / {m[k]['bottom_1_kept_accuracy']:.3f})"
            for k in ("standard", "robust")
        ]
        + ["not in the paper"]
    )
    d = config.data
    return report.write_report(
        workdir,
        [
            report.title("Shah et al.'s synthetic check (v1)"),
            report.paragraph(
                f"{d.dim}-d inputs with one signal coordinate, {d.num_train} training and "
                f"{d.num_test} test examples; one-hidden-layer ReLU MLP of width "
                f"{config.model.hidden[0]} (the authors' 25,000), standard and L-inf PGD "
                f"(epsilon {config.train.pgd.epsilon}) training, {config.train.epochs} epochs. "
                "g is the input-gradient of the summed cross-entropy on the test set.",
                "AQ(A_G, 1) is computed as the notebook does, from the two probabilities above "
                "(its text: 'Therefore AQ(A_G,1) is -0.521 and 1.000'); the retrained DiffROAR "
                "at one coordinate (only the top, or only the bottom, coordinate by abs(g) kept, "
                "the rest 0) is our own check of the same question, mean ± SE over "
                f"{config.evaluation.seeds} retrainings.",
            ),
            report.table(
                ["quantity", "standard", "L-inf robust", "paper (standard / robust)"], rows
            ),
        ],
    )
