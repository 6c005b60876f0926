"""BlockMNIST's outputs: ``results.json``, ``diff_roar.csv``, two figures and ``report.md``.

``gradients.png`` shows the input-gradients of the first BlockMNIST test images for every
model trained on BlockMNIST; ``diff_roar.png`` and ``diff_roar.csv`` the DiffROAR curves.
Each is written when the run measured what it shows (``results``, ``diff_roar``).
"""

from __future__ import annotations

from pathlib import Path

from experiments import report

NUM_SHOWN = 8  # test images in gradients.png


def write(workdir, config, out: dict, *, images=None, gradients: dict | None = None) -> Path:
    """Writes the results, figures and report into ``workdir``; returns ``report.md``.

    Args:
      workdir: the run's folder.
      config: the run's config.
      out: the dict returned by ``experiments.block_mnist.run``.
      images: ``[N, H, W, C]`` the BlockMNIST test images, in order (the first 8 are shown);
        None when the run trained no model (``only_controls``).
      gradients: ``(arch, kind)`` -> ``[n, H, W, C]`` input-gradients of the label's logit on
        the first ``n >= 8`` of ``images``, one per model trained on BlockMNIST, in the
        figure's row order; None as ``images``.
    """
    workdir = report.workdir_path(workdir)
    report.write_json(workdir / "results.json", out)
    if "results" in out:
        report.attribution_figure(
            workdir / "gradients.png",
            images[:NUM_SHOWN],
            [g[:NUM_SHOWN] for g in gradients.values()],
            row_titles=[f"{arch} {kind}" for arch, kind in gradients],
            title="Input-gradients (label's logit) on BlockMNIST",
        )
    if "diff_roar" in out:
        report.diff_roar_files(workdir, out["diff_roar"])
    blocks = [
        report.title("BlockMNIST: standard vs PGD-trained models"),
        report.paragraph(
            f"Data: `{report.source_name(config.data.source)}` turned into BlockMNIST (our "
            "construction; signal block at the top or bottom at random per example, a fixed "
            "hollow square in the other) and BlockMNIST-Top (signal always on top). Adam, "
            f"learning rate {config.train.learning_rate}, batch {config.train.batch_size}. "
            f"{out['seconds']:.0f} s."
        ),
    ]
    if "results" in out:
        blocks += _localisation_blocks(config, out)
    if "diff_roar" in out:
        blocks += _diff_roar_blocks(config, out)
    return report.write_report(workdir, blocks)


def _localisation_blocks(config, out):
    e, p = config.evaluation, config.train.pgd
    return [
        report.bullets(
            *(
                f"`{arch}`: {report.describe_model(config.model[arch])}, "
                f"{out['models'][arch]['epochs']} epochs; PGD training: {p.norm}, epsilon "
                f"{p.epsilon}, {p.steps} steps of {p.step_size}, random start."
                for arch in config.model
            )
        ),
        report.paragraph(
            f"PGD accuracy: the same ball, {e.attack_steps} steps of 2.5 epsilon / "
            f"{e.attack_steps}, random start, first {e.num_images} test images. "
            f"Localisation: gradients of the label's logit on {e.num_images} test images, "
            "means with 99% intervals over images."
        ),
        report.paragraph(
            "Shah et al.'s claim: robust gradients sit on the signal block; standard ones leak "
            "onto the null block unless the signal is always on top."
        ),
        report.table(
            [
                "data / model / training",
                "clean acc.",
                "PGD acc.",
                "signal share of abs",
                "signal share of positive",
                f"top {e.top_k:.0%} in null block",
            ],
            [
                [
                    name,
                    f"{r['clean_accuracy']:.4f}",
                    f"{r['pgd_accuracy']:.4f}",
                    *(
                        report.fmt_interval(r[m])
                        for m in ("signal_mass_abs", "signal_mass_pos", "top_k_in_null")
                    ),
                ]
                for name, r in out["results"].items()
            ],
        ),
        report.image("gradients.png", "gradients"),
    ]


def _diff_roar_blocks(config, out):
    c = config.evaluation.diff_roar
    return [
        report.heading("DiffROAR"),
        report.paragraph(
            f"Attributions: |input-gradient| of the predicted class's logit of the `{c.model}` "
            "models trained on BlockMNIST, or uniform noise redrawn for every seed (the "
            f"controls); each mask retrains a fresh `{c.model}` for {c.epochs} epochs on the "
            "masked training split and measures it on the masked test split; removed pixels "
            f"are 0. Seeds per mask: {c.seeds} for the gradients, {c.control_seeds} for the "
            "controls. +- is the standard error over seeds, [the std over seed pairs] Shah et "
            "al.'s error bar."
        ),
        report.table(
            ["data / attribution", *(f"k={k}" for k in c.fractions)],
            [
                [
                    name,
                    *(
                        f"{d:+.3f} +- {se:.3f} [{sd:.3f}]"
                        for d, se, sd in zip(
                            r["diff_roar"], r["diff_roar_se"], r["diff_roar_pair_std"], strict=True
                        )
                    ),
                ]
                for name, r in out["diff_roar"].items()
            ],
        ),
        report.image("diff_roar.png", "DiffROAR"),
    ]
