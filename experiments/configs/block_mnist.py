"""BlockMNIST: where standard and PGD-trained models' gradients sit (Shah et al. 2021, §4).

Run:
  python -m experiments.block_mnist --config=experiments/configs/block_mnist.py \
      --workdir=runs/block_mnist

Builds BlockMNIST and BlockMNIST-Top (56x28) from the shared MNIST test set's fixed
8,000/2,000 split, trains a standard and an L-infinity PGD MLP on each, and reports clean test
accuracy and the localisation of input-gradients (label as target): the share of |gradient|
and of its positive part on the signal block, and the fraction of the top 5% pixels in the
null block. ``:smoke`` runs on digits (16x8) in seconds.
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Config; ``arg="smoke"`` gives a seconds-long run on digits."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.source = "idx:../shared/data/mnist"
    c.hidden = (1024, 512)
    c.epochs = 10
    c.batch_size = 128
    c.learning_rate = 1e-3
    c.pgd = ml_collections.ConfigDict(
        dict(norm="linf", epsilon=0.2, step_size=0.05, steps=10, random_start=True)
    )
    c.top_k = 0.05
    c.num_eval = 1000
    if arg == "smoke":
        c.source = "digits"
        c.hidden = (128,)
        c.epochs = 3
        c.batch_size = 64
        c.pgd.steps = 3
        c.num_eval = 100
    elif arg not in (None, ""):
        raise ValueError(f"unknown config variant {arg!r} (use 'smoke' or nothing)")
    return c
