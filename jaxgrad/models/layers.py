"""Building blocks shared by the models: activations, pooling and gradient taps.

Max-pooling is written as reshape + max rather than ``lax.reduce_window``: on XLA's CPU
backend the gradient of ``reduce_window`` (select-and-scatter) is slow, and the reshape form
made input-gradients of the MNIST CNN 1.5x faster (see DESIGN.md). The two forms agree on
the forward pass; where several inputs of a window tie for the maximum, the reshape form
splits the gradient equally between them instead of sending all of it to one.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

Activation = Callable[[jax.Array], jax.Array]

PERTURBATIONS = "perturbations"
INTERMEDIATES = "intermediates"


def softplus(x: jax.Array, beta: float = 1.0) -> jax.Array:
    """Softplus with sharpness ``beta``: ``log(1 + exp(beta * x)) / beta``.

    As ``beta`` grows it tends to ReLU; unlike ReLU its second derivative is non-zero
    everywhere, which score matching (a Hessian trace in the input) needs.
    """
    return jax.nn.softplus(beta * x) / beta


def get_activation(activation: str | Activation, beta: float = 1.0) -> Activation:
    """Resolves an activation given by name (``relu``, ``softplus``) or as a callable.

    Args:
      activation: ``"relu"``, ``"softplus"`` (with ``beta``) or any elementwise callable,
        e.g. a ReLU with a guided-backprop ``custom_vjp``.
      beta: sharpness of the softplus; ignored otherwise.
    """
    if callable(activation):
        return activation
    if activation == "relu":
        return nn.relu
    if activation == "softplus":
        if not beta > 0:
            raise ValueError(f"softplus beta must be > 0, got {beta}")
        return functools.partial(softplus, beta=beta)
    raise ValueError(f"activation must be 'relu', 'softplus' or a callable, got {activation!r}")


def max_pool_2x2(x: jax.Array) -> jax.Array:
    """2x2 max-pooling with stride 2 (VALID: an odd last row/column is dropped).

    Args:
      x: ``[B, H, W, C]``.

    Returns:
      ``[B, H // 2, W // 2, C]``.
    """
    b, h, w, c = x.shape
    x = x[:, : h // 2 * 2, : w // 2 * 2]
    return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def tap(module: nn.Module, name: str, x: jax.Array) -> jax.Array:
    """Exposes an intermediate value to gradients and to inspection.

    The value passes through ``module.perturb(name, ...)`` (collection ``perturbations``),
    so the gradient of any output with respect to it is the gradient with respect to the
    zero perturbation variable, and it is sown into ``intermediates``. Both are no-ops
    unless the caller passes those collections (``perturbations``) or makes them mutable
    (``intermediates``), so plain ``apply`` is unaffected.
    """
    x = module.perturb(name, x, collection=PERTURBATIONS)
    module.sow(INTERMEDIATES, name, x)
    return x


def check_image_batch(x: jax.Array, name: str = "x", channels: int | None = None) -> None:
    """Raises a ``ValueError`` at trace time unless ``x`` is a ``[B, H, W, C]`` float batch."""
    if x.ndim != 4:
        raise ValueError(f"{name} must have rank 4 [B, H, W, C], got shape {tuple(x.shape)}")
    if channels is not None and x.shape[-1] != channels:
        raise ValueError(
            f"{name} must have {channels} channel(s) in its last axis, got shape {tuple(x.shape)}"
        )
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{name} must be a floating-point array, got dtype {x.dtype}")
