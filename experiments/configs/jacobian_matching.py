"""Srinivas & Fleuret (2018): Jacobian matching for distillation from few examples.

Run (MNIST; without tensorflow-datasets' MNIST add ``--config.data.source=idx:DIR``):
  python -m experiments.jacobian_matching --workdir=runs/jacobian_matching

A teacher (the note's CNN: conv 32, conv 64, dense 1024, ReLU) is trained on the whole
training split; students (a narrower CNN: conv 16, conv 32, dense 256) are trained on random
subsets of ``sizes`` examples, the same subset for every method of a seed, with

* ``cross_entropy``: the labels alone;
* ``distillation``: + ``alpha`` x Hinton's ``temperature^2 KL`` to the teacher's softened output;
* ``jacobian_matching``: distillation + ``beta`` x the Jacobian-matching penalty (the
  label's input-gradient, l2-normalised, of student and teacher);
* ``noisy_distillation``: distillation on ``x + N(0, sigma^2)``, the cross-entropy on ``x``
  (a related form: the exact equivalence holds for squared-error distillation and raw
  all-output Jacobians, ``jaxgrad.distillation``).

``alpha``, ``temperature``, ``beta`` and ``sigma`` are our choices (the paper's values for this
setting are not in our sources), fixed before any run and not tuned. Every student trains the
same number of steps. ``:cifar100`` is the same protocol for a TPU VM or GPU: a CIFAR
ResNet-18 teacher on CIFAR-100 (the papers' SGD recipe), CIFAR ResNet-18 students on 5, 10 and
50 examples per class. ``:smoke`` runs on digits in seconds.
"""

import ml_collections

from experiments.configs import base

METHODS = ("cross_entropy", "distillation", "jacobian_matching", "noisy_distillation")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Config; ``arg`` is ``smoke``, ``cifar100`` or empty (MNIST scale)."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.num_devices = 0  # every device
    c.data = base.data("tfds:mnist")  # offline: --config.data.source=idx:DIR
    c.model = ml_collections.ConfigDict(
        dict(
            teacher=dict(name="cnn", features=(32, 64), dense=1024, activation="relu"),
            student=dict(name="cnn", features=(16, 32), dense=256, activation="relu"),
        )
    )
    c.train = base.train(batch_size=128, epochs=5, log_every=100)  # the teacher's
    c.distill = ml_collections.ConfigDict(
        dict(
            methods=METHODS,
            sizes=(100, 500, 1000),
            seeds=3,
            steps=400,  # per student, whatever its subset's size
            # The students' train fields (over the teacher's): every student runs `steps`.
            train=dict(optimizer="adam", learning_rate=1e-3, schedule="constant", batch_size=64),
            alpha=1.0,
            temperature=4.0,
            beta=1.0,
            sigma=0.1,
        )
    )
    c.evaluation = ml_collections.ConfigDict(dict(gradient_images=500))
    if arg == "smoke":
        c.num_devices = 1
        c.data.source = "digits"
        c.model.teacher.update(dict(features=(8, 16), dense=64))
        c.model.student.update(dict(features=(4, 8), dense=32))
        c.train.update(dict(batch_size=64, epochs=2, log_every=10))
        c.distill.update(dict(sizes=(50, 100), seeds=2, steps=20))
        c.evaluation.gradient_images = 50
    elif arg == "cifar100":
        c.data = base.data("tfds:cifar100", num_classes=100)
        c.model = ml_collections.ConfigDict(
            dict(
                teacher=dict(name="resnet18", activation="relu", dtype="float32"),
                student=dict(name="resnet18", activation="relu", dtype="float32"),
            )
        )
        c.train.update(base.cifar_sgd(200, (100, 150), checkpoint_every=1000))
        c.distill.update(dict(sizes=(500, 1000, 5000), steps=10000))
        c.distill.train = ml_collections.ConfigDict(
            dict(
                optimizer="sgd",
                learning_rate=0.05,
                momentum=0.9,
                weight_decay=5e-4,
                schedule="cosine",
                milestones=(),
                augment="cifar",
                batch_size=128,
            )
        )
        c.evaluation.gradient_images = 1000
    elif arg not in (None, ""):
        raise ValueError(f"unknown config variant {arg!r} (use 'smoke', 'cifar100' or nothing)")
    return c
