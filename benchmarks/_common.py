"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

import os
import platform

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
