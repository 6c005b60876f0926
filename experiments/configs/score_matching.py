"""Srinivas & Fleuret (2021): the four training objectives compared.

Run (MNIST scale; on a machine without tensorflow-datasets' MNIST, add
``--config.data.source=idx:DIR`` with MNIST-format files):
  python -m experiments.score_matching --config=experiments/configs/score_matching.py \
      --workdir=runs/score_matching

Paper scale (CIFAR-100 or CIFAR-10 through tensorflow-datasets; a TPU VM or GPU):
  python -m experiments.score_matching \
      --config=experiments/configs/score_matching.py:cifar100 --workdir=gs://BUCKET/sm100

Default: a softplus (beta 10) CNN on MNIST trained with each objective of Eq. 4
(cross-entropy alone, + score matching, + anti-score-matching, + gradient norm; the paper's
lambda, mu, tau, sigma), then measured: test accuracy, the Hessian trace of the label's logit
(Hutchinson), GAN-test accuracy of activation-maximisation samples (the authors' protocol:
500 steps of 0.1 with weight decay 1e-2 toward 0.5 from clip(N(0.5, 0.2^2), 0, 1)) judged by
an independently trained proxy, discriminative pixel perturbation (least salient pixels
first; 3a: each model with its own gradients, 3b: the baseline model with each model's
gradients) and the density-ratio profile.

``:cifar100`` / ``:cifar10`` are the paper's protocol (``reference`` in the docs): CIFAR
ResNet-18 with softplus beta 10, SGD 0.1 with momentum 0.9 and weight decay 5e-4, 200 epochs
with the rate divided by 10 at epochs 100 and 150, batch 128, random crop (padding 4) and
flip, inputs in [0, 1]; GAN-test of 1,024 samples judged by a CIFAR VGG-11 (the authors'
proxy) trained with the same recipe; pixel perturbation on the 10,000 test images with the
code's 25 log-spaced fractions from 0.01 to 1, salience = standard deviation of the signed
gradient over the colour channels, removed pixels set to 0.5. ``:smoke`` runs on digits.
"""

import ml_collections
import numpy as np

from experiments.configs import base

VARIANTS = ("smoke", "cifar100", "cifar10")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Config; ``arg`` is one of :data:`VARIANTS` or empty (MNIST scale)."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.num_devices = 0  # every device
    c.data = base.data("tfds:mnist")  # offline: --config.data.source=idx:DIR
    c.model = ml_collections.ConfigDict(
        dict(
            name="cnn",
            features=(16, 32),
            dense=256,
            activation="softplus",
            beta=10.0,
            pooling="avg",  # smooth everywhere: no max-pooling kinks for the Taylor estimate
        )
    )
    c.train = base.train(batch_size=128, epochs=10, log_every=50)
    # Eq. 4's regularizers; the hyper-parameters default to the paper's (PAPER_DEFAULTS).
    # Besides the four kinds: the stability term's ablation (mu = 0) and anti-score-matching
    # trained on Hutchinson's trace instead of the Taylor estimate it can game.
    c.train.objectives = (
        "none",
        "score_matching",
        "anti_score_matching",
        "gradient_norm",
        "score_matching_mu0",
        "anti_score_matching_hutchinson",
    )
    c.train.variants = ml_collections.ConfigDict(
        dict(
            score_matching_mu0=dict(kind="score_matching", mu=0.0),
            anti_score_matching_hutchinson=dict(
                kind="anti_score_matching", estimator="hutchinson", num_probes=1
            ),
        )
    )
    c.evaluation = ml_collections.ConfigDict(
        dict(
            # Exact (every basis direction), Hutchinson and antithetic Taylor (at each model's
            # training sigma) traces of the label's logit on the same images; draws: probes
            # or noise pairs per image, for the standard errors.
            trace=dict(num_images=32, draws=64, chunk=8, exact=True),  # chunk: images per call
            gan_test=dict(
                num_samples=250,  # sample i maximises class i % num_classes
                steps=500,
                step_size=0.1,
                weight_decay=1e-2,
                # The judge (proxy): its model section and the train fields it overrides;
                # trained separately, from another key.
                judge=dict(
                    model=dict(name="cnn", features=(16, 32), dense=256, activation="relu"),
                    train=dict(epochs=10),
                ),
            ),
            perturbation=dict(
                num_images=1000,
                fractions=(0.0, 0.1, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95),
                aggregate="abs_sum",  # per-pixel salience (see pixel_salience)
                fill="image_mean",  # the paper's text; the code's is constant 0.5
                fill_value=0.5,  # with fill="constant"
                chunk=1000,  # images per call
            ),
            density_ratio=dict(
                num_images=500,
                sigmas=(0.01, 0.03, 0.1, 0.3, 0.5),
                num_samples=16,
                chunk=100,  # images per call
            ),
        )
    )
    if arg == "smoke":
        c.num_devices = 1
        c.data.source = "digits"
        c.model.features = (4, 8)
        c.model.dense = 32
        c.train.batch_size = 64
        c.train.epochs = 3
        c.train.learning_rate = 0.01  # the avg-pooled net is slow to start at 1e-3
        e = c.evaluation
        e.trace.update(dict(num_images=4, draws=8, chunk=4))
        e.gan_test.update(dict(num_samples=20, steps=5))
        e.gan_test.judge.model.update(dict(features=(4, 8), dense=32))
        e.gan_test.judge.train.epochs = 2
        e.perturbation.num_images = 50
        e.density_ratio.update(dict(num_images=20, num_samples=2))
    elif arg in ("cifar100", "cifar10"):
        c.data = base.data(f"tfds:{arg}", num_classes=100 if arg == "cifar100" else 10)
        c.model = ml_collections.ConfigDict(
            dict(name="resnet18", activation="softplus", beta=10.0, dtype="float32")
        )
        c.train.update(base.cifar_sgd(200, (100, 150), checkpoint_every=1000))
        e = c.evaluation
        c.train.objectives = ("none", "score_matching", "anti_score_matching", "gradient_norm")
        e.trace.update(dict(num_images=16, draws=64, chunk=1))  # exact: 3,072 HVPs an image
        e.gan_test.num_samples = 1024  # the code: batches of 256 until >= 1,000
        e.gan_test.judge.model = ml_collections.ConfigDict(dict(name="vgg11", activation="relu"))
        e.gan_test.judge.train = ml_collections.ConfigDict(dict(epochs=200))
        e.perturbation.update(
            dict(
                num_images=10000,
                fractions=tuple(float(f) for f in np.logspace(-2, 0, 25)),
                aggregate="std",
                fill="constant",
                fill_value=0.5,
            )
        )
        e.density_ratio.update(dict(num_images=1000, num_samples=16))
    elif arg not in (None, ""):
        raise ValueError(f"unknown config variant {arg!r} (use one of {VARIANTS} or nothing)")
    return c
