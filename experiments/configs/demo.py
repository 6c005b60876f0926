"""``make demo``: a tour of the papers' headline results on the offline digits, in minutes.

Run:
  python -m experiments.demo --config=experiments/configs/demo.py --workdir=runs/demo

Sections:
- ``model`` / ``train``: the classifier every part explains (the sanity-check CNN, ReLU), with
  checkpoints (a rerun resumes).
- ``shift``: the closed-form shift manipulation of that classifier (Srinivas & Fleuret 2021,
  Sec. 3): the class ``target_class``'s gradient replaced by the ``target_map`` pattern.
- ``score_matching``: a smooth CNN (softplus, average pooling) trained twice from the same
  initialisation and batch order, with cross-entropy alone and with ``objective``'s
  regularizer (the paper's hyper-parameters), then the Hessian trace and the density-ratio
  profile of both. The report's verdict is the paper's prediction for score matching; the
  other objectives are measured without one.
- ``sanity``: cascading randomization of the classifier (Adebayo et al. 2018, with Sundararajan &
  Taly's ``spearman_nz``), per method.
- ``evaluation``: the attribution methods side by side on the same images, and pixel
  perturbation (the most salient pixels replaced by the training mean, ties at random).

On 2 CPU cores the whole tour takes 75 s (2 minutes beside another job), compilation
included. ``:smoke`` is a version of about a minute for tests.
"""

import ml_collections

from experiments.configs import base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Config; ``arg="smoke"`` gives a seconds-long run for tests."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.num_devices = 0  # 0: every device (of every host); n: the first n
    c.data = base.data("digits")
    c.model = ml_collections.ConfigDict(dict(name="cnn", activation="relu", beta=1.0))
    c.train = base.train(
        batch_size=64, epochs=8, checkpoint_every=50, keep_checkpoints=2, log_every=23
    )
    c.shift = ml_collections.ConfigDict(dict(target_class=3, target_map="cross"))
    c.score_matching = ml_collections.ConfigDict(
        dict(
            objective="score_matching",  # or anti_score_matching / gradient_norm
            model=dict(
                name="cnn",
                features=(16, 32),
                dense=128,
                activation="softplus",
                beta=10.0,
                pooling="avg",  # smooth everywhere: the Taylor trace estimate is exact to O(sigma)
            ),
            train=dict(epochs=12, learning_rate=3e-3),  # fields of `train` overridden
            trace_images=32,  # exact Hessian traces (every basis direction) of the label's logit
            density_ratio=dict(num_images=200, sigmas=(0.01, 0.03, 0.1, 0.3, 0.5), num_samples=16),
        )
    )
    c.sanity = ml_collections.ConfigDict(
        dict(
            num_images=64,
            methods=("gradient", "gradient_x_input", "integrated_gradients"),
            stddev=0.01,  # the note's re-initialisation: truncated normal, mean 0
            ig_steps=32,
            ig_chunk_size=8,  # path points evaluated together
            smoothgrad_samples=32,  # with "smoothgrad" among the methods
            noise_level=0.15,
        )
    )
    # The fields of experiments.fullgrad's evaluation section that its methods read.
    c.evaluation = ml_collections.ConfigDict(
        dict(
            num_images=8,  # shown side by side: classes 0, 1, ... in order (one image each)
            methods=(
                "gradient",
                "gradient_x_input",
                "integrated_gradients",
                "smoothgrad",
                "gradcam",
                "fullgrad",
            ),
            ig_steps=32,
            ig_chunk_size=8,
            smoothgrad_samples=32,
            smoothgrad_noise=0.15,  # of each image's value range
            smoothgrad_chunk_size=0,  # noise samples evaluated together (0: all at once)
            gradcam_layer="hidden2_act",  # the last convolution's activation (4x4 on digits)
            ties="random",  # pixels of equal salience removed in random order
            attribution_batch=120,
            perturbation=dict(num_images=360, fractions=(0.0, 0.05, 0.1, 0.2, 0.3, 0.5)),
        )
    )
    if arg == "smoke":
        c.train.epochs = 1
        c.train.log_every = 5
        sm = c.score_matching
        sm.model.update(dict(features=(4, 8), dense=16))
        sm.train.epochs = 1
        sm.trace_images = 4
        sm.density_ratio.update(dict(num_images=8, num_samples=2))
        c.sanity.update(dict(num_images=4, ig_steps=4))
        c.evaluation.update(dict(num_images=4, ig_steps=4, smoothgrad_samples=2))
        c.evaluation.perturbation.num_images = 16
    elif arg not in (None, ""):
        raise ValueError(f"unknown config variant {arg!r} (use 'smoke' or nothing)")
    return c
