"""A training process driven by the tests: resumption after SIGKILL, and multi-process runs.

  python tests/workers/train_worker.py --workdir DIR --steps N [--checkpoint-every K]
      [--sleep S] [--coordinator HOST:PORT --num-processes P --process-id I] [--host-shards]

Trains the MNIST CNN on digits with ``jaxgrad.training.fit`` over every visible device
(every process's devices when distributed), prints ``step N`` after each update, and writes
the final params and optimizer state of process I to ``DIR/final_I.npz`` and the per-step
losses to ``DIR/metrics.jsonl``. With ``--host-shards`` each process loads only its shard of
the data and ``fit`` runs with ``host_local=True``.
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from jaxgrad import sharding as shd  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--workdir", required=True)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--checkpoint-every", type=int, default=0)
    p.add_argument("--sleep", type=float, default=0.0)
    p.add_argument("--coordinator")
    p.add_argument("--num-processes", type=int, default=1)
    p.add_argument("--process-id", type=int, default=0)
    p.add_argument("--host-shards", action="store_true")
    a = p.parse_args()
    if a.coordinator:
        shd.initialize_distributed(
            a.coordinator,
            a.num_processes,
            a.process_id,
            cpu_collectives="gloo",
            initialization_timeout=120,
        )

    import jax
    import numpy as np

    from jaxgrad.data import load_dataset
    from jaxgrad.models import MnistCNN
    from jaxgrad.training import (
        classifier_loss,
        create_train_state,
        fit,
        make_optimizer,
        make_train_step,
    )

    workdir = Path(a.workdir)
    shard = (jax.process_index(), jax.process_count()) if a.host_shards else None
    data = load_dataset("digits", "train", shard=shard)
    print(f"examples {len(data['label'])}", flush=True)
    model = MnistCNN(num_classes=10)
    tx = make_optimizer("adam", 1e-3)
    mesh = shd.data_mesh()
    state = create_train_state(model, tx, jax.random.key(0), data["image"][:1], mesh=mesh)
    train_step = make_train_step(classifier_loss(model), tx, mesh=mesh)

    def on_step(step, _):
        print(f"step {step}", flush=True)
        if a.sleep:
            time.sleep(a.sleep)

    state = fit(
        state,
        train_step,
        data,
        key=jax.random.key(1),
        batch_size=a.batch_size,
        num_steps=a.steps,
        mesh=mesh,
        checkpoint_dir=workdir / "checkpoints" if a.checkpoint_every else None,
        checkpoint_every=max(a.checkpoint_every, 1),
        keep_checkpoints=2,
        metrics_path=workdir / "metrics.jsonl",
        log_every=1,
        progress=False,
        on_step=on_step,
        host_local=a.host_shards,
    )
    leaves = jax.tree.leaves(shd.to_host({"params": state.params, "opt": state.opt_state}))
    np.savez(workdir / f"final_{jax.process_index()}.npz", *leaves)
    print(f"done {jax.process_count()} processes {len(jax.devices())} devices", flush=True)


if __name__ == "__main__":
    main()
