"""Shah, Jain & Netrapalli (2021, v1): the synthetic check of where input-gradients point.

Run:
  python -m experiments.synthetic --workdir=runs/synthetic

The authors' code, except the width: 10-d inputs with one signal coordinate (coordinate 0
with probability 0.1), 10,000 training and 1,000 test examples, a one-hidden-layer ReLU MLP,
SGD 0.1 without momentum or weight decay, the rate times 0.75 every 50 epochs (their
``LambdaLR(max(0.01, 0.75 ** (epoch // 50)))``, whose floor on the factor is never reached:
0.1 x 0.75^9 = 0.0075 in the last 50 epochs), 500 epochs of batch 250; the robust model
trains on L-inf PGD examples (epsilon 0.45, 8 steps of 0.25 epsilon, no random start, x +
delta clamped to [-1, 1]). Attributions: the input-gradient of the summed cross-entropy. Width 2,000 here (their
code 25,000, their text 20,000; ``:paper`` runs 25,000). The notebook's AQ(A_G, 1) is
Pr[argmax = signal] - Pr[argmin = signal]; as our own check we also retrain the same MLP
(standard training, ``evaluation.retrain`` epochs, our choice) on the data with only the top
(or bottom) coordinate kept, the rest set to 0 (the data mean): DiffROAR at one coordinate.
``:smoke`` runs in seconds.
"""

import ml_collections

from experiments.configs import base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Config; ``arg`` is ``smoke``, ``paper`` or empty."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.num_devices = 1  # a 10-d MLP: one device is plenty
    c.data = base.data("synthetic:signal_coordinate", num_classes=2)
    c.data.update(dict(dim=10, bias_prob=0.1, num_train=10_000, num_test=1_000))
    c.model = ml_collections.ConfigDict(dict(name="mlp", hidden=(2000,), activation="relu"))
    c.train = base.train(
        optimizer="sgd",
        learning_rate=0.1,
        momentum=0.0,
        schedule="multistep",
        milestones=tuple(range(50, 500, 50)),
        gamma=0.75,
        batch_size=250,
        epochs=500,
        log_every=4000,
    )
    c.train.pgd = ml_collections.ConfigDict(
        dict(
            norm="linf",
            epsilon=0.45,
            steps=8,
            step_size=0.1125,
            random_start=False,
            clip=(-1.0, 1.0),  # the data's bounds, as their code clamps x + delta
        )
    )
    c.evaluation = ml_collections.ConfigDict(dict(retrain=dict(epochs=100), seeds=2))
    if arg == "smoke":
        c.data.update(dict(num_train=1000, num_test=200))
        c.model.hidden = (64,)
        c.train.update(dict(epochs=20, milestones=(10,), log_every=40))
        c.evaluation.retrain.epochs = 5
        c.evaluation.seeds = 1
    elif arg == "paper":
        c.model.hidden = (25_000,)
    elif arg not in (None, ""):
        raise ValueError(f"unknown config variant {arg!r} (use 'smoke', 'paper' or nothing)")
    return c
