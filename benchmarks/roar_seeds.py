"""DiffROAR retraining: S seeds trained together (one vmapped program) against one by one.

  python benchmarks/roar_seeds.py [--source digits|idx:/path/to/mnist] [--seeds 1,2,4,8]
      [--hidden 256] [--epochs 3] [--batch 64] [--tiny] [--out FILE]

One DiffROAR mask's retrainings as ``jaxgrad.drivers.make_retrainer`` runs them (an MLP, Adam,
the given epochs and batch size, then the test accuracy): for each ``S``, the wall time of
``S`` calls ``retrain(train, test, key)`` (the loop over seeds) and of one call
``retrain.together(train, test, keys[S])`` (``jaxgrad.training.train_seeds_for_epochs``), compilation
included in both (each retraining compiles its step once, as in a DiffROAR curve), and their
ratio. The accuracies of both are printed beside (they agree: the same models). Prints JSON,
and writes it to ``--out`` when given.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import jax
import numpy as np
from _common import machine_info

from jaxgrad.data import load_dataset
from jaxgrad.drivers import make_retrainer
from jaxgrad.models import MLP


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", default="digits")
    parser.add_argument("--seeds", default="1,2,4,8")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--tiny", action="store_true", help="CI's smoke size")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    train, test = load_dataset(args.source, "train"), load_dataset(args.source, "test")
    seeds = [int(s) for s in args.seeds.split(",")]
    epochs = args.epochs
    if args.tiny:
        train = {k: v[:256] for k, v in train.items()}
        test = {k: v[:64] for k, v in test.items()}
        seeds, epochs = [2], 1
    retrain = make_retrainer(
        lambda: MLP(hidden=(args.hidden,)), epochs=epochs, batch_size=args.batch
    )
    rows = []
    for s in seeds:
        keys = jax.random.split(jax.random.key(s), s)
        log(f"{s} seed(s): one by one")
        t0 = time.perf_counter()
        alone = [float(retrain(train, test, k)) for k in keys]
        loop_s = time.perf_counter() - t0
        log(f"{s} seed(s): together")
        t0 = time.perf_counter()
        together = np.asarray(retrain.together(train, test, keys)).tolist()
        together_s = time.perf_counter() - t0
        rows.append(
            {
                "seeds": s,
                "one_by_one_s": loop_s,
                "together_s": together_s,
                "speedup": loop_s / together_s,
                "accuracy_one_by_one": alone,
                "accuracy_together": together,
            }
        )
        log(json.dumps(rows[-1]))
    result = {
        "machine": machine_info(),
        "source": args.source,
        "train_examples": len(train["label"]),
        "model": f"MLP({args.hidden})",
        "epochs": epochs,
        "batch": args.batch,
        "rows": rows,
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
