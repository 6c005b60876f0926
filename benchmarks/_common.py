"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

import os
import platform
import time

import jax


def machine_info() -> dict:
    """What the figures were measured on."""
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": jax.device_count(),
    }


def no_sync() -> None:
    """Nothing to wait for (the CPU, or a JAX call that blocks itself)."""


def torch_sync(device: str):
    """What makes a PyTorch timing wait for the device: CUDA's synchronize, or nothing."""
    if str(device).startswith("cuda"):
        import torch

        return torch.cuda.synchronize
    return no_sync


def wall_times(fn, repeats: int, sync=no_sync, warmup: int = 1) -> list[float]:
    """Seconds of each of ``repeats`` calls of ``fn()`` (each followed by ``sync()``), after
    ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return times
