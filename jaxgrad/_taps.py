"""Taps: named intermediate values of a Flax Linen model, open to gradients (a leaf module).

A tap passes a value through ``module.perturb(name, ...)`` (collection ``perturbations``), so
the gradient of any output with respect to a zero perturbation variable is the gradient with
respect to that value, and sows it into ``intermediates``. Both are no-ops unless the caller
passes the ``perturbations`` collection or makes ``intermediates`` mutable, so a plain
``apply`` is unaffected. Paths join the module scopes and the tap name with ``/``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax

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
