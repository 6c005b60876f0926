"""The shift manipulation's outputs: ``results.json``, ``manipulation.png`` and ``report.md``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from experiments import report


def write(
    workdir,
    config,
    results: dict,
    *,
    images,
    labels,
    original,
    closed_form,
    learned_shift,
    finetuned,
    target_map,
) -> Path:
    """Writes the results, the figure and the report into ``workdir``; returns ``report.md``.

    Args:
      workdir: the run's folder.
      config: the run's config.
      results: the dict returned by ``experiments.shift_manipulation.run``.
      images: ``[N, H, W, C]`` the test images shown.
      labels: ``[N]`` their labels.
      original: ``[N, H, W, C]`` input-gradients of the label's logit before manipulation.
      closed_form: ``[N, H, W, C]`` the closed-form shifted model's gradients of the target
        class's logit.
      learned_shift: ``[N, H, W, C]`` the gradients of the label's logit of the classifier
        plus the learned shift network.
      finetuned: ``[N, H, W, C]`` the fine-tuned model's gradients of the label's logit.
      target_map: ``[H, W, C]`` the map the gradients are steered to.
    """
    workdir = report.workdir_path(workdir)
    mc = config.manipulation
    figure = report.attribution_figure(
        workdir / "manipulation.png",
        images,
        [
            original,
            closed_form,
            learned_shift,
            finetuned,
            np.broadcast_to(np.asarray(target_map), images.shape),
        ],
        row_titles=[
            "original",
            f"closed form (class {mc.target_class})",
            "learned shift (label)",
            "fine-tuned, not a shift (label)",
            "target map",
        ],
        column_titles=[f"y={int(v)}" for v in labels],
        title="Input-gradients before and after the shift manipulation",
    )
    report.write_json(workdir / "results.json", results, indent=2)
    c, lr, ls = results["closed_form"], results["learned"], results["learned_shift"]
    return report.write_report(
        workdir,
        [
            report.title("Shift manipulation (Srinivas & Fleuret 2021, Sec. 3)"),
            report.paragraph(
                f"Digits CNN ({config.model.activation}), {results['test_images']} test images, "
                f"target map `{mc.target_map}`."
            ),
            report.heading("(a) Closed form"),
            report.paragraph(
                f"Adding `g(x) = <m, x> - f_c(x)` to every logit (class c = {mc.target_class}):"
            ),
            report.table(
                ["figure", "value"],
                [
                    ["max abs difference of the softmax", f"{c['softmax_max_abs_diff']:.2e}"],
                    [
                        "max abs error of the class-c gradient to the map",
                        f"{c['gradient_max_abs_error']:.2e}",
                    ],
                    [
                        "test accuracy, original / shifted",
                        f"{c['accuracy_original']:.4f} / {c['accuracy_shifted']:.4f}",
                    ],
                ],
            ),
            report.heading("(b) A learned shift, the classifier frozen"),
            report.paragraph(
                "g(x) = -logsumexp(f(x)) + u(x) is added to every logit, so f_y + g = "
                "log p(y|x) + u(x); u (an MLP with "
                f"{mc.shift.hidden} softplus units, its output layer started at 0) alone is "
                f"trained with {mc.alpha} x (1 - cos(grad_x (f_y + g), m)); the classifier is "
                "frozen, so its softmax cannot change. On the test images:"
            ),
            report.table(
                ["figure", "value"],
                [
                    ["max abs difference of the softmax", f"{ls['softmax_max_abs_diff']:.2e}"],
                    ["same predictions", str(ls["same_predictions"])],
                    [
                        "cosine of the label's gradient to the map: mean / median / min",
                        f"{ls['cosine_to_map_after']:.3f} / {ls['cosine_to_map_after_median']:.3f}"
                        f" / {ls['cosine_to_map_after_min']:.3f}",
                    ],
                ],
            ),
            report.heading("(c) Not a shift: fine-tuning the whole network"),
            report.paragraph(
                f"Fine-tuning every weight {lr['steps']} steps with cross-entropy + {mc.alpha} x "
                "(1 - cos(grad_x f_y, m)) also moves the gradients, but it changes the "
                "classifier (its predictions move):"
            ),
            report.table(
                ["figure", "value"],
                [
                    [
                        "test accuracy, original / fine-tuned",
                        f"{lr['accuracy_original']:.4f} / {lr['accuracy_finetuned']:.4f} "
                        f"({lr['accuracy_change_points']:+.2f} points)",
                    ],
                    [
                        "mean cosine of the label's gradient to the map, before / after",
                        f"{lr['cosine_to_map_before']:.3f} / {lr['cosine_to_map_after']:.3f} "
                        f"(min {lr['cosine_to_map_after_min']:.3f})",
                    ],
                ],
            ),
            report.image(figure, "manipulation"),
        ],
    )
