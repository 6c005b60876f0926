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
        (
            "AQ / DiffROAR at 1 coordinate, chance-normalised",
            "diff_roar_chance_normalised",
            "{:+.3f}",
        ),
        ("mean abs(cos(x, g))", "abs_cos", "{:.3f}"),
    ):
        paper_key = "aq" if key.startswith("diff_roar") else key
        rows.append(
            [name]
            + [fmt.format(m[k][key]) for k in ("standard", "robust")]
            + [f"{paper['standard'][paper_key]} / {paper['robust'][paper_key]}"]
        )
    rows.append(
        [
            "test accuracy",
            f"{m['standard']['test_accuracy']:.3f}",
            f"{m['robust']['test_accuracy']:.3f}",
            "1.0 / 1.0 (stated)",
        ]
    )
    rows.append(
        ["accuracy of a retrained MLP on the top / bottom coordinate alone"]
        + [
            f"{m[k]['top_1_kept_accuracy']:.3f} / {m[k]['bottom_1_kept_accuracy']:.3f}"
            for k in ("standard", "robust")
        ]
        + [""]
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
                "The chance-normalised AQ is 2 (acc_top - acc_bottom), i.e. each accuracy "
                "measured as (acc - 1/2) / (1/2): the notebook's robust AQ of 1.000 is that "
                "scale (a raw difference of 1 would need 0% accuracy from the bottom coordinate). "
                "That reading is ours; the notebook does not state it.",
            ),
            report.table(
                ["quantity", "standard", "L-inf robust", "paper (standard / robust)"], rows
            ),
        ],
    )
