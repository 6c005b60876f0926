"""BlockMNIST: where standard and PGD-trained models' gradients sit, and their DiffROAR.

Shah, Jain & Netrapalli 2021, §2.1 and §4.

Run:
  python -m experiments.block_mnist --config=experiments/configs/block_mnist.py \
      --workdir=runs/block_mnist

Builds BlockMNIST and BlockMNIST-Top (56x28) from MNIST (tensorflow-datasets, or offline
MNIST-format files with ``--config.data.source=idx:DIR``, e.g. a test-set-only folder split
8,000/2,000). On each, trains a standard and an L2 PGD model of every architecture in
``model`` (the MLP and a small CNN), and reports clean and PGD test accuracy and the
localisation of input-gradients (label as target): the share of |gradient| and of its
positive part on the signal block, and the fraction of the top 5% pixels in the null block.

``evaluation.diff_roar`` then retrains fresh models of one architecture on masked data:
DiffROAR curves of the standard and the robust model's |gradient| (logit of the predicted
class, as Shah et al.) and of a random attribution on BlockMNIST, and of a random attribution
on plain MNIST (the control whose DiffROAR should be 0), the random attributions redrawn for
every seed. ``:controls`` runs the random controls alone (no model is attributed); ``:smoke``
runs on digits (16x8) in about two minutes.
"""

import ml_collections

from experiments.configs import base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Config; ``arg="smoke"`` gives a short run on digits, ``"controls"`` the controls alone."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.num_devices = 1
    c.data = base.data("tfds:mnist")  # offline: --config.data.source=idx:DIR
    # One entry per architecture, each trained standard and with PGD.
    c.model = ml_collections.ConfigDict(
        {
            "mlp": dict(name="mlp", hidden=(1024, 512)),
            "cnn": dict(name="cnn", features=(16, 32), dense=256),
        }
    )
    c.train = base.train(batch_size=128, epochs=10, log_every=50)
    # L2, epsilon 1.5 on [0, 1] pixels (MNIST images have norm about 9); L-inf 0.2 made the
    # MLP collapse to 31% clean accuracy, L-inf 0.1 left it at 91.5% (both 10 epochs).
    c.train.pgd = ml_collections.ConfigDict(
        dict(norm="l2", epsilon=1.5, step_size=0.375, steps=7, random_start=True)
    )
    # Train fields per architecture (e.g. {"cnn": {"epochs": 2}}); the rest from ``train``.
    c.train.per_model = ml_collections.ConfigDict({"mlp": {}, "cnn": {}})
    c.evaluation = ml_collections.ConfigDict(
        dict(
            attack_steps=20,  # PGD accuracy: same ball, 20 steps of 2.5 epsilon / 20
            top_k=0.05,
            num_images=1000,
            diff_roar=dict(
                enabled=True,
                model="mlp",  # attributions of this architecture's models; fresh ones retrained
                fractions=(0.05, 0.1, 0.2, 0.3, 0.5),
                seeds=2,
                control_seeds=3,  # the random attributions, redrawn per seed
                epochs=10,  # of each retraining (the rest of the train section as is)
                only_controls=False,  # True (the ":controls" variant): the random controls alone
            ),
        )
    )
    if arg == "smoke":
        c.data.source = "digits"
        c.model.mlp.hidden = (128,)
        c.model.cnn.update(dict(features=(4, 8), dense=32))
        c.train.batch_size = 64
        c.train.epochs = 3
        c.train.pgd.steps = 2
        c.train.per_model.cnn = dict(epochs=2)
        c.evaluation.attack_steps = 3
        c.evaluation.num_images = 100
        c.evaluation.diff_roar.update(
            dict(fractions=(0.2, 0.5), seeds=1, control_seeds=2, epochs=2)
        )
    elif arg == "controls":
        c.evaluation.diff_roar.only_controls = True
    elif arg not in (None, ""):
        raise ValueError(f"unknown config variant {arg!r} (use 'smoke', 'controls' or nothing)")
    return c
