"""The demo's outputs: ``results.json``, ``input_gradients.png`` and ``report.md``."""

from __future__ import annotations

from pathlib import Path

from experiments import report


def write(workdir, config, results: dict, *, images, labels, predictions, gradients) -> Path:
    """Writes the demo's results, figure and report into ``workdir``; returns ``report.md``.

    Args:
      workdir: the run's folder.
      config: the run's config.
      results: the dict returned by ``experiments.demo.run``.
      images: ``[N, H, W, C]`` the test images shown.
      labels: ``[N]`` their labels.
      predictions: ``[N]`` the model's predicted classes.
      gradients: ``[N, H, W, C]`` the input-gradients of the predicted logits.
    """
    workdir = report.workdir_path(workdir)
    report.write_json(workdir / "results.json", results, indent=2)
    figure = report.attribution_figure(
        workdir / "input_gradients.png",
        images,
        [gradients],
        row_titles=["input-gradient"],
        column_titles=[
            f"y={int(a)} pred={int(b)}" for a, b in zip(labels, predictions, strict=True)
        ],
        title="Signed input-gradients of the predicted logit",
    )
    t = config.train
    return report.write_report(
        workdir,
        [
            report.title("jaxgrad demo"),
            report.paragraph(
                f"Model `{config.model.name}` ({config.model.activation}) trained on "
                f"`{report.source_name(config.data.source)}` for {results['steps']} steps of "
                f"batch {results['batch_size']} with {t.optimizer} (lr {t.learning_rate}) on "
                f"{results['devices']} device(s), in {results['seconds']:.1f} s including "
                "compilation."
            ),
            report.table(
                ["metric", "value"],
                [
                    ["test accuracy", f"{results['test_accuracy']:.4f}"],
                    ["test loss", f"{results['test_loss']:.4f}"],
                    ["test images", results["num_test"]],
                ],
            ),
            report.heading("Signed input-gradients"),
            report.image(figure, "input-gradients"),
            report.paragraph(
                "Each map is the gradient of the predicted class's logit with respect to the "
                "input, summed over channels, divided by the 99.5th percentile of its absolute "
                "value and clipped to [-1, 1]: red where increasing the pixel raises the logit, "
                "blue where it lowers it. The number under each map is the raw sum of the "
                "gradient."
            ),
            report.paragraph(
                "Files: `config.json`, `metrics.jsonl` (training and evaluation rows), "
                "`results.json`, `checkpoints/` (orbax; rerunning with the same workdir resumes "
                "from the newest)."
            ),
        ],
    )
