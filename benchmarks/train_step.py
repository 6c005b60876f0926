"""Training-step throughput of the MNIST CNN and the CIFAR ResNet-18, JAX against PyTorch.

  python benchmarks/train_step.py [--batch-size 128] [--steps 5] [--models cnn,resnet18]

Prints one JSON object: for each model, examples/s of one SGD (momentum 0.9) training step
at the given batch in jaxgrad (jitted, donated state; compilation excluded) and, where the
``bench`` extra (torch) is installed, of the same architecture in PyTorch in the same
process, and the ratio jax / torch. Both use every core of this machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _common import machine_info, torch_sync, wall_times

from jaxgrad.models import MnistCNN, ResNet18
from jaxgrad.training import classifier_loss, create_train_state, make_train_step

SHAPES = {"cnn": (28, 28, 1), "resnet18": (32, 32, 3)}


def jax_step(name: str, batch_size: int, donate: bool = True):
    """``(step, state, batch, key)``: jaxgrad's jitted SGD (momentum 0.9) training step."""
    model = MnistCNN() if name == "cnn" else ResNet18(num_classes=10)
    shape = SHAPES[name]
    rng = np.random.default_rng(0)
    batch = {
        "image": jnp.asarray(rng.uniform(size=(batch_size, *shape)), jnp.float32),
        "label": jnp.asarray(rng.integers(0, 10, batch_size), jnp.int32),
        "mask": jnp.ones((batch_size,), jnp.float32),
    }
    tx = optax.sgd(0.01, momentum=0.9)
    state = create_train_state(model, tx, jax.random.key(0), batch["image"][:1])
    step = make_train_step(classifier_loss(model), tx, donate=donate)
    return step, state, batch, jax.random.key(1)


def bench_jax(name: str, batch_size: int, steps: int) -> dict:
    t0 = time.perf_counter()
    step, state, batch, key = jax_step(name, batch_size)
    step = step.lower(state, batch, key).compile()
    try:
        flops = (step.cost_analysis() or {}).get("flops")
    except NotImplementedError:  # a backend without a cost model
        flops = None
    state, m = step(state, batch, key)
    jax.block_until_ready(m)
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        state, m = step(state, batch, key)
        jax.block_until_ready(m)
        times.append(time.perf_counter() - t)
    sec = float(np.median(times))
    return {
        "step_s": sec,
        "examples_per_s": batch_size / sec,
        "init_and_compile_s": compile_s,
        "flops_per_step": flops,
    }


def torch_models():
    import torch
    from torch import nn

    class CNN(nn.Module):
        def __init__(self, in_ch=1, hw=28):
            super().__init__()
            self.c1 = nn.Conv2d(in_ch, 32, 5, padding=2)
            self.c2 = nn.Conv2d(32, 64, 5, padding=2)
            self.fc1 = nn.Linear(64 * (hw // 4) ** 2, 1024)
            self.fc2 = nn.Linear(1024, 10)

        def forward(self, x):
            x = torch.max_pool2d(torch.relu(self.c1(x)), 2)
            x = torch.max_pool2d(torch.relu(self.c2(x)), 2)
            return self.fc2(torch.relu(self.fc1(x.flatten(1))))

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.short = nn.Sequential()
            if stride != 1 or cin != cout:
                self.short = nn.Sequential(
                    nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
                )

        def forward(self, x):
            y = torch.relu(self.bn1(self.conv1(x)))
            return torch.relu(self.bn2(self.conv2(y)) + self.short(x))

    class ResNet18T(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(
                nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU()
            )
            layers, cin = [], 64
            for i, w in enumerate((64, 128, 256, 512)):
                for j in range(2):
                    layers.append(Block(cin, w, 2 if i > 0 and j == 0 else 1))
                    cin = w
            self.layers = nn.Sequential(*layers)
            self.fc = nn.Linear(512, 10)

        def forward(self, x):
            return self.fc(self.layers(self.stem(x)).mean((2, 3)))

    return {"cnn": CNN, "resnet18": ResNet18T}


def torch_step(name: str, batch_size: int, device: str = "cpu"):
    """``(step, model)``: one SGD (momentum 0.9) training step of the PyTorch model on ``device``."""
    import torch

    model = torch_models()[name]().to(device)
    h, w, c = SHAPES[name]
    x = torch.rand(batch_size, c, h, w, device=device)
    y = torch.randint(0, 10, (batch_size,), device=device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()

    def step():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()

    return step, model


def bench_torch(name: str, batch_size: int, steps: int, device: str = "cpu") -> dict:
    import torch

    step, model = torch_step(name, batch_size, device)
    n_params = sum(p.numel() for p in model.parameters())
    warmup = 3 if device.startswith("cuda") else 1  # cuDNN's autotuning, the allocator
    sec = float(np.median(wall_times(step, steps, torch_sync(device), warmup)))
    return {
        "step_s": sec,
        "examples_per_s": batch_size / sec,
        "params": n_params,
        "threads": torch.get_num_threads(),
        "device": device,
        "version": torch.__version__,
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--models", default="cnn,resnet18")
    a = p.parse_args()
    out = {
        "machine": machine_info(),
        "batch_size": a.batch_size,
        "timed_steps": a.steps,
        "results": {},
    }
    try:
        import torch  # noqa: F401

        have_torch = True
    except ImportError:
        have_torch = False
        out["torch"] = "not installed: pip install -e '.[bench]' to compare"
    for name in a.models.split(","):
        row = {"jax": bench_jax(name, a.batch_size, a.steps)}
        if have_torch:
            row["torch"] = bench_torch(name, a.batch_size, a.steps)
            row["ratio_jax_over_torch"] = (
                row["jax"]["examples_per_s"] / row["torch"]["examples_per_s"]
            )
        out["results"][name] = row
        print(f"# {name}: {json.dumps(row)}", file=sys.stderr, flush=True)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
