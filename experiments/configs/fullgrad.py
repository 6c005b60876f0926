"""FullGrad's evaluations (Srinivas & Fleuret 2019): pixel perturbation and ROAR.

Run:
  python -m experiments.fullgrad --workdir=runs/fullgrad   # MNIST through tensorflow-datasets
  python -m experiments.fullgrad --workdir=runs/fullgrad --config.data.source=idx:DIR  # offline

Compared: FullGrad, |gradient|, gradient x input, Integrated Gradients (black baseline),
SmoothGrad of the gradient and Grad-CAM at the last convolutional block, against a random
ranking; every map explains the model's predicted class and ranks pixels by the sum of its
absolute values over channels (FullGrad's code: ``abs().sum(channel)``).

- **Pixel perturbation** (the paper's §5.1 on ImageNet VGG-16): the k% *least* salient pixels of
  each test image are replaced by a constant and the absolute fractional change of the
  predicted logit, ``abs(f(x) - f(x~)) / abs(f(x))``, is averaged (lower is better), for k in
  the paper's {0.1, 1, 3, 5, 10}%. Both a black fill (the paper's) and a 0.5 fill: on MNIST
  black is the background, where gradient x input and IG are exactly 0, so a black fill cannot
  tell methods apart there (see the report).
- **ROAR** (Hooker et al., the paper's §5.2 on CIFAR-100): the k% *most* salient pixels of every
  training and test image are replaced by the training set's mean, a fresh model is retrained
  on the masked training set and tested on the masked test set (a larger drop is better); k in
  {10, 30, 50, 70, 90}%, and an unmasked retraining as the reference.

Pixels of equal salience are ranked in random order (``evaluation.ties``): on MNIST,
gradient x input and IG are 0 on every black pixel, and a stable sort would remove the top
rows first. Our choices where the paper is silent or differs: SmoothGrad with 50 samples (the
authors' code: 100), Grad-CAM on the last block's activation (their code: the last
convolution's output), and ROAR's fill one scalar, the training set's mean (Hooker et al.:
per channel; the same on MNIST).

The default is the CPU-sized run: a VGG-style CNN with BatchNorm (3x3 convolutions 16, 16,
pool, 32, 32, pool, 64, global average, dense; 5 BatchNorm layers whose effective biases
FullGrad sums) on the offline MNIST split, ROAR retrainings of 2 epochs, 2 per mask. ``:cifar100`` is the
paper's ROAR setting for a TPU VM: the CIFAR VGG-11 with BatchNorm (8 convolutions and one
dense layer: the "9-layer VGG" we read the paper's as), the CIFAR recipe (SGD 0.1, momentum
0.9, weight decay 5e-4, 150 epochs, x0.1 at 50 and 100, crop and flip) and retrainings of 60
epochs (x0.1 at 20 and 40, our choice: the paper does not give its retraining schedule),
3 retrainings per mask. ``:smoke`` runs on digits in about a minute.
"""

import ml_collections

from experiments.configs import base

VARIANTS = ("mnist", "cifar100", "smoke")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Config; ``arg`` is one of :data:`VARIANTS` (empty: ``mnist``)."""
    arg = arg or "mnist"
    if arg not in VARIANTS:
        raise ValueError(f"unknown config variant {arg!r} (use one of {VARIANTS} or nothing)")
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.num_devices = 1
    c.data = base.data("tfds:mnist")  # offline: --config.data.source=idx:DIR
    c.model = ml_collections.ConfigDict(
        dict(name="vgg", layers=(16, 16, "M", 32, 32, "M", 64), activation="relu")
    )
    c.train = base.train(batch_size=128, epochs=5, log_every=50, checkpoint_every=500)
    c.evaluation = ml_collections.ConfigDict(
        dict(
            methods=(
                "fullgrad",
                "gradient",
                "gradient_x_input",
                "integrated_gradients",
                "smoothgrad",
                "gradcam",
            ),
            gradcam_layer="act5",  # the last convolutional block's activation
            ig_steps=32,  # Gauss-Legendre nodes, black baseline
            ig_chunk_size=8,
            smoothgrad_samples=50,
            smoothgrad_noise=0.15,  # of each image's value range (FullGrad's code: 0.15)
            smoothgrad_chunk_size=0,  # noise samples evaluated together (0: all at once)
            attribution_batch=256,  # images per attribution call
            # Pixels of equal salience (gradient x input and IG are 0 on every black pixel)
            # are ranked in random order; "stable" keeps raster order (top rows first).
            ties="random",
            perturbation=dict(
                num_images=2000,  # the first test images (all of the offline split)
                fractions=(0.001, 0.01, 0.03, 0.05, 0.1),  # the paper's k = 0.1 ... 10%
                fills=(0.0, 0.5),  # black (the paper's) and mid-grey
                batch=500,
            ),
            roar=dict(
                fractions=(0.1, 0.3, 0.5, 0.7, 0.9),  # k: the share of pixels removed
                seeds=2,  # retrainings per mask
                train=dict(epochs=2),  # overrides of the train section for the retrainings
            ),
        )
    )
    if arg == "cifar100":
        c.num_devices = 0  # every device
        c.data = base.data("tfds:cifar100", num_classes=100)
        c.model = ml_collections.ConfigDict(dict(name="vgg11", activation="relu"))
        c.train = base.train(**base.cifar_sgd(150, (50, 100), checkpoint_every=2000))
        c.evaluation.gradcam_layer = "act8"
        c.evaluation.perturbation.num_images = 10_000
        c.evaluation.perturbation.batch = 1000
        c.evaluation.attribution_batch = 500
        c.evaluation.smoothgrad_chunk_size = 10  # 50 samples x 500 images at once: 40 GiB
        c.evaluation.roar.seeds = 3
        c.evaluation.roar.train = dict(epochs=60, milestones=(20, 40))
    elif arg == "smoke":
        c.data = base.data("digits")
        c.model.layers = (8, "M", 16)
        c.train.update(dict(batch_size=64, epochs=4, log_every=20, learning_rate=3e-3))
        c.evaluation.gradcam_layer = "act2"
        c.evaluation.update(dict(ig_steps=8, smoothgrad_samples=4, attribution_batch=128))
        c.evaluation.perturbation.update(dict(num_images=100, fractions=(0.02, 0.1)))
        c.evaluation.roar.update(dict(fractions=(0.3, 0.7), seeds=2, train=dict(epochs=2)))
    return c
