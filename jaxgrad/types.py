"""Type aliases and the model contract shared by every jaxgrad module."""

from __future__ import annotations

from typing import Any, Protocol

import jax

Array = jax.Array
ArrayLike = jax.typing.ArrayLike
PRNGKey = jax.Array
Params = Any  # a pytree of arrays (for Linen models, the whole variables dict)


class LogitFn(Protocol):
    """A pure classifier in evaluation mode.

    ``logit_fn(params, x) -> logits`` with ``x: [B, *S]`` float and ``logits: [B, K]``.
    Examples must not interact (no batch statistics), and ``params`` must never be
    closed over, so that ``jit``, ``vmap``, sharding and parameter randomization all
    act on the params pytree.
    """

    def __call__(self, params: Params, x: Array) -> Array: ...
