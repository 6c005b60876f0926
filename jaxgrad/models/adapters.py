"""Adapters from Flax modules to the model contract ``logit_fn(params, x) -> logits``.

For Linen the ``params`` of the contract is the whole variables dict (``{"params": ...}``
plus ``{"batch_stats": ...}`` for BatchNorm models), applied in evaluation mode. For NNX the
module is split once into a graph definition (static, closed over) and a state (the params
pytree of the contract) that is merged back inside the function.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax

from jaxgrad.models.layers import INTERMEDIATES, PERTURBATIONS
from jaxgrad.types import LogitFn, Params


def linen_logit_fn(model: nn.Module) -> LogitFn:
    """``logit_fn(variables, x) = model.apply(variables, x, train=False)``.

    The returned function carries the module as ``logit_fn.model``, which the layer-based
    attribution methods (``fullgrad``, ``gradcam``, ``guided_backprop``) use to reach the
    model's taps and activation.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxgrad.models import MnistCNN, init_variables, linen_logit_fn
      >>> model = MnistCNN()
      >>> variables = init_variables(model, jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
      >>> linen_logit_fn(model)(variables, jnp.zeros((2, 8, 8, 1))).shape
      (2, 10)
    """

    def logit_fn(params: Params, x: jax.Array) -> jax.Array:
        return model.apply(params, x, train=False)

    # Methods that need the module itself (FullGrad, Grad-CAM, guided backprop) find it here.
    logit_fn.model = model
    return logit_fn


def init_variables(model: nn.Module, key: jax.Array, sample_x: jax.Array) -> dict[str, Any]:
    """Initialises a Linen model and returns its variables without the tap collections.

    Args:
      model: a Linen module taking ``(x, train)``.
      key: PRNG key for the initializers.
      sample_x: an input of the right per-example shape, ``[B, *S]`` (B may be 1).

    Returns:
      ``{"params": ..., "batch_stats": ...}`` (the latter only for BatchNorm models).

    Note:
      Wrap it in ``jax.jit(init_variables, static_argnums=0)`` to compile the whole
      initialisation at once. On XLA's CPU backend, random draws of multi-dimensional
      shapes compile about 4x slower with JAX's default ``jax_threefry_partitionable=True``
      (a ResNet-18 with narrow widths: 17 s against 4.8 s); jaxgrad leaves that global
      setting to the caller.
    """
    variables = model.init(key, sample_x, train=False)
    return {k: v for k, v in variables.items() if k not in (PERTURBATIONS, INTERMEDIATES)}


def zero_perturbations(model: nn.Module, variables: Params, sample_x: jax.Array) -> Params:
    """The zero ``perturbations`` pytree matching every tap of ``model`` at ``sample_x``'s shape.

    Passing ``{**variables, "perturbations": p}`` to ``model.apply`` and differentiating with
    respect to ``p`` gives the gradient with respect to each tapped intermediate value.
    """

    def shapes(x):
        _, state = model.apply(variables, x, train=False, mutable=[PERTURBATIONS])
        return state[PERTURBATIONS]

    return jax.tree.map(
        lambda s: jax.numpy.zeros(s.shape, s.dtype), jax.eval_shape(shapes, sample_x)
    )


def nnx_logit_fn(module: Any) -> tuple[LogitFn, Params]:
    """Splits a Flax NNX module into ``(logit_fn, params)`` following the contract.

    The module is put into evaluation mode (``module.eval()``) first, so Dropout is off and
    BatchNorm uses its running averages. ``params`` is the module's ``nnx.Param`` state,
    the argument that gradients, randomization and sharding act on; the remaining state
    (BatchNorm statistics, RNG counters) is fixed in evaluation mode and travels with the
    graph definition.

    Example:
      >>> from flax import nnx
      >>> import jax.numpy as jnp
      >>> logit_fn, params = nnx_logit_fn(nnx.Linear(4, 3, rngs=nnx.Rngs(0)))
      >>> logit_fn(params, jnp.ones((2, 4))).shape
      (2, 3)
    """
    from flax import nnx

    module.eval()
    graphdef, params, rest = nnx.split(module, nnx.Param, ...)

    def logit_fn(params: Params, x: jax.Array) -> jax.Array:
        return nnx.merge(graphdef, params, rest)(x)

    return logit_fn, params
