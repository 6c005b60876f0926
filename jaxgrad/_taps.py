"""Taps: named intermediate values of a Flax Linen model, open to gradients (a leaf module).

A tap passes a value through ``module.perturb(name, ...)`` (collection ``perturbations``), so
the gradient of any output with respect to a zero perturbation variable is the gradient with
respect to that value, and sows it into ``intermediates``. Both are no-ops unless the caller
passes the ``perturbations`` collection or makes ``intermediates`` mutable, so a plain
``apply`` is unaffected. Paths join the module scopes and the tap name with ``/``.
:func:`tap_gradients` reads the values and gradients at every tap of any
:class:`jaxgrad.types.TappedLogitFn`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from jaxgrad._validation import check_target
from jaxgrad.types import Params, TappedLogitFn

PERTURBATIONS = "perturbations"
INTERMEDIATES = "intermediates"


def tap(module: Any, name: str, x: jax.Array) -> jax.Array:
    """Exposes ``x`` as the tap ``name`` of ``module`` (inside a Linen ``__call__``)."""
    x = module.perturb(name, x, collection=PERTURBATIONS)
    module.sow(INTERMEDIATES, name, x)
    return x


def flatten_paths(tree: Mapping, prefix: tuple[str, ...] = ()) -> dict[str, jax.Array]:
    """``{"a": {"b": v}} -> {"a/b": v}``; a sown tuple ``(v,)`` becomes ``v``."""
    out = {}
    for k, v in tree.items():
        if isinstance(v, Mapping) or hasattr(v, "items"):
            out.update(flatten_paths(v, (*prefix, k)))
        else:
            out["/".join((*prefix, k))] = v[0] if isinstance(v, tuple) else v
    return out


def unflatten_paths(flat: Mapping[str, Any]) -> dict:
    """The inverse of :func:`flatten_paths` (without the tuples): ``{"a/b": v} -> {"a": {"b": v}}``."""
    out: dict = {}
    for path, v in flat.items():
        *scopes, leaf = path.split("/")
        node = out
        for s in scopes:
            node = node.setdefault(s, {})
        node[leaf] = v
    return out


def tap_gradients(logit_fn: TappedLogitFn, params: Params, x: jax.Array, target: jax.Array):
    """Gradients of the target logits with respect to ``x`` and to every tap of ``logit_fn``.

    Returns:
      ``(input_gradient [B, *S], tap_gradients, tap_values, logits)`` where the two dicts map
      a tap's path (``"hidden1_out"``, ``"layer1_block1/bn1_out"``) to ``[B, ...]`` arrays.
    """
    logits_shape, shapes = jax.eval_shape(lambda z: logit_fn.taps(params, z, None), x)
    target = check_target(target, x.shape[0], logits_shape.shape[-1])
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

    def f(xx, p):
        logits, values = logit_fn.taps(params, xx, p)
        selected = jnp.take_along_axis(logits, target[:, None], axis=1)[:, 0]
        return jnp.sum(selected), (values, logits)

    (gx, gp), (values, logits) = jax.grad(f, argnums=(0, 1), has_aux=True)(x, zeros)
    return gx, gp, values, logits
