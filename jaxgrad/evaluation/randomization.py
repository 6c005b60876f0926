"""Model randomization for sanity checks (Adebayo et al. 2018; Sundararajan & Taly 2018).

``randomization_stages`` re-initialises the layers of any params pytree (Linen variables, an
NNX state, a plain dict, an Equinox module's arrays), selected by path, from the output layer
down: cascading (each stage also keeps the layers randomized before it) or independent
(each stage randomizes one layer of the trained params). The table that attributes every
stage and compares it with the trained model is a driver: ``jaxgrad.drivers.sanity_table``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from jaxgrad._validation import (
    KEY,
    POSITIVE,
    check_choice,
    checked,
)

MODES = ("cascading", "independent")


def layer_names(
    variables: Mapping[str, Any], model: Any = None, sample_x: jax.Array | None = None
) -> list[str]:
    """The top-level layers of ``variables["params"]``, output first.

    With ``model`` and ``sample_x`` the order is the model's call order (from an abstract
    ``model.init``), which is reliable. Without them it is the dict's order, which is the
    call order for freshly initialised Flax params but alphabetical after some round trips
    (a restored checkpoint, for one): pass the model, or ``layers=`` explicitly.
    """
    if not isinstance(variables, Mapping) or "params" not in variables:
        raise TypeError(
            "variables must be a Flax variables dict with a 'params' collection, got "
            f"{type(variables).__name__}"
        )
    if model is not None:
        if sample_x is None:
            raise ValueError("layer_names with a model needs sample_x (one input, [1, *S])")

        order: list[str] = []

        def record(next_fun, args, kwargs, context):
            path = context.module.scope.path if context.module.scope is not None else ()
            if len(path) == 1 and path[0] in variables["params"] and path[0] not in order:
                order.append(path[0])
            return next_fun(*args, **kwargs)

        with nn.intercept_methods(record):  # pytree dicts come back sorted; calls do not
            jax.eval_shape(lambda k: model.init(k, sample_x), jax.random.key(0))
        return list(reversed(order))
    return list(reversed(list(variables["params"])))


def leaf_paths(tree: Any) -> list[str]:
    """The path of each leaf of a pytree as ``"a/b/0/kernel"`` (in ``jax.tree`` order).

    Dict keys, attribute names (Equinox) and sequence indices are joined with ``/``; the
    trailing ``value`` of an NNX variable is dropped, so an NNX state's paths are its
    modules' attribute paths (``"layers/0/kernel"``).
    """
    out = []
    for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]:
        parts = []
        for entry in path:
            for attr in ("key", "name", "idx"):
                if hasattr(entry, attr):
                    parts.append(str(getattr(entry, attr)))
                    break
            else:
                parts.append(str(entry))
        if (
            len(path) > 1
            and isinstance(path[-1], jax.tree_util.GetAttrKey)
            and parts[-1] == "value"
        ):
            parts.pop()
        out.append("/".join(parts))
    return out


def tree_layers(tree: Any) -> list[str]:
    """The layers of a params pytree, output first: each leaf's parent path, in reverse tree order.

    For a sequence of layers (an Equinox MLP, ``nnx.Sequential``) that is the output-first
    order; for dicts ``jax.tree`` sorts the keys, so pass the order explicitly to
    :func:`randomization_stages` when the names do not sort in call order.
    """
    parents = []
    for path in leaf_paths(tree):
        parent = path.rpartition("/")[0] or path
        if parent not in parents:
            parents.append(parent)
    return list(reversed(parents))


def _in_layer(path: str, layer: str) -> bool:
    return path == layer or path.startswith(layer + "/")


@checked(key=KEY, stddev=POSITIVE)
def randomization_stages(
    params: Any,
    *,
    key: jax.Array,
    layers: Sequence[str] | None = None,
    mode: str = "cascading",
    reinit: Callable[[jax.Array], Any] | None = None,
    stddev: float = 0.01,
) -> list[tuple[str, Any]]:
    """The trained params and one randomized copy per layer, for any params pytree.

    Layers are selected by path (:func:`leaf_paths`): a layer ``"fc1"`` or ``"layers/0"``
    is every leaf whose path is it or starts with it and ``/``. Any pytree works: a Linen
    variables dict, an NNX ``nnx.State``, a plain dict of arrays, an Equinox module's arrays
    (``eqx.partition(model, eqx.is_array)[0]``).

    A Linen variables dict (``{"params": ..., "batch_stats": ...}``) is recognised by its
    ``"params"`` entry: paths are then relative to ``variables["params"]`` and the other
    collections are kept as trained.

    Args:
      params: the trained params pytree (or Linen variables).
      key: PRNG key; stage ``i`` uses ``fold_in(key, i)``.
      layers: the layer paths to randomize, in order, output layer first. Required for
        pytrees other than Linen variables (:func:`tree_layers` lists candidates). For Linen
        variables the default is the top-level layers in reverse dict order, which is the call
        order only for freshly initialised params (``optax.apply_updates`` and checkpoints
        sort them): pass ``layer_names(variables, model, x)`` for the model's call order,
        e.g. ``softmax_linear, fc1, hidden2, hidden1`` for the MNIST CNN.
      mode: ``"cascading"`` (cumulative, the papers' main test) or ``"independent"``.
      reinit: ``key -> fresh params tree`` of the same structure (for Linen variables, the
        ``params`` collection, e.g. ``lambda k: init_variables(model, k, x)["params"]``: the
        layers' own initializers); by default a truncated normal (at 2 std) with ``stddev``
        for every weight and bias (the note's choice, std 0.01).
      stddev: the truncated normal's std when ``reinit`` is None.

    Returns:
      ``[("original", params), (layer, randomized params), ...]``, each of ``params``' type.
    """
    check_choice(mode, MODES, "mode")
    linen = isinstance(params, Mapping) and isinstance(params.get("params"), Mapping)
    tree = params["params"] if linen else params
    if layers is None:
        if not linen:
            raise ValueError(
                "randomization_stages needs layers= for a params pytree other than Linen "
                "variables: its order (output layer first) cannot be read from the tree, whose "
                f"mappings are sorted by name; its layers: {tree_layers(tree)}"
            )
        layers = layer_names(params)
    if isinstance(layers, str):
        raise ValueError(f"layers must be a list of layer names, got the string {layers!r}")
    layers = list(layers)
    paths = leaf_paths(tree)
    leaves, treedef = jax.tree.flatten(tree)
    missing = [name for name in layers if not any(_in_layer(p, name) for p in paths)]
    if missing:
        raise ValueError(
            f"layers {missing} match no path of the params; available layers: "
            f"{layer_names(params) if linen else tree_layers(tree)}"
        )

    def wrap(new_leaves):
        new = treedef.unflatten(new_leaves)
        return {**params, "params": new} if linen else new

    stages = [("original", dict(params) if linen else params)]
    current = list(leaves)
    for i, name in enumerate(layers):
        k = jax.random.fold_in(key, i)
        members = [j for j, p in enumerate(paths) if _in_layer(p, name)]
        if reinit is None:
            keys = jax.random.split(k, len(members))
            fresh = {
                j: (stddev * jax.random.truncated_normal(kj, -2.0, 2.0, leaves[j].shape)).astype(
                    leaves[j].dtype
                )
                for kj, j in zip(keys, members, strict=True)
            }
        else:
            new_tree = reinit(k)
            new_leaves = jax.tree.leaves(new_tree)
            if leaf_paths(new_tree) != paths or any(
                np.shape(a) != np.shape(b) for a, b in zip(new_leaves, leaves, strict=True)
            ):
                raise ValueError(
                    f"reinit(key) must return a params tree of the same paths and shapes as "
                    f"the trained params (layer {name!r})"
                )
            fresh = {j: new_leaves[j] for j in members}
        base = current if mode == "cascading" else list(leaves)
        current = [fresh.get(j, leaf) for j, leaf in enumerate(base)]
        stages.append((name, wrap(current)))
    return stages
