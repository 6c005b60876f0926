"""The main job of ``make demo``: the sanity-check CNN on the offline digits data set.

Run:
  python -m experiments.demo --config=experiments/configs/demo.py --workdir=runs/demo

On 2 CPU cores it trains for about 10-20 seconds (plus compilation) and reaches a test
accuracy of about 0.97 on the 360 held-out digits. ``:smoke`` trains for 20 steps only.
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
    c.evaluation = ml_collections.ConfigDict(dict(num_images=10))  # input-gradients shown
    if arg == "smoke":
        c.train.epochs = 1
        c.train.log_every = 5
        c.evaluation.num_images = 4
    elif arg not in (None, ""):
        raise ValueError(f"unknown config variant {arg!r} (use 'smoke' or nothing)")
    return c
