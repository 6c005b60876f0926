"""Model randomization for sanity checks (Adebayo et al. 2018; Sundararajan & Taly 2018).

``randomization_stages`` re-initialises the layers of a params pytree, from the output layer
down: cascading (each stage also keeps the layers randomized before it) or independent
(each stage randomizes one layer of the trained params). The table that attributes every
stage and compares it with the trained model is a driver: ``jaxgrad.drivers.sanity_table``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax

from jaxgrad._validation import check_choice

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


def _truncated_normal_like(key, tree, stddev):
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(key, len(leaves))
    return treedef.unflatten(
        [
            (stddev * jax.random.truncated_normal(k, -2.0, 2.0, leaf.shape)).astype(leaf.dtype)
            for k, leaf in zip(keys, leaves, strict=True)
        ]
    )


def randomization_stages(
    variables: Mapping[str, Any],
    *,
    key: jax.Array,
    layers: Sequence[str] | None = None,
    mode: str = "cascading",
    reinit: Callable[[jax.Array], Mapping[str, Any]] | None = None,
    stddev: float = 0.01,
) -> list[tuple[str, dict[str, Any]]]:
    """The trained variables and one randomized copy per layer.

    Args:
      variables: ``{"params": {layer: ...}, ...}`` (other collections, e.g. BatchNorm
        statistics, are kept as trained).
      key: PRNG key; stage ``i`` uses ``fold_in(key, i)``.
      layers: the layers to randomize, in order (default: :func:`layer_names` of
        ``variables``, the dict's order reversed; pass ``layer_names(variables, model, x)``
        for the model's call order, e.g. ``softmax_linear, fc1, hidden2, hidden1`` for the
        MNIST CNN).
      mode: ``"cascading"`` (cumulative, the papers' main test) or ``"independent"``.
      reinit: ``key -> fresh params tree`` (e.g. ``lambda k: init_variables(model, k, x)
        ["params"]``, the layers' own initializers); by default a truncated normal (at 2 std)
        with ``stddev`` for every weight and bias (the note's choice, std 0.01).
      stddev: the truncated normal's std when ``reinit`` is None.

    Returns:
      ``[("original", variables), (layer, randomized variables), ...]``.
    """
    check_choice(mode, MODES, "mode")
    params = variables["params"]
    layers = layer_names(variables) if layers is None else list(layers)
    missing = [name for name in layers if name not in params]
    if missing:
        raise ValueError(f"layers {missing} are not in params; available: {list(params)}")
    stages = [("original", dict(variables))]
    current = dict(params)
    for i, name in enumerate(layers):
        k = jax.random.fold_in(key, i)
        if reinit is None:
            fresh = _truncated_normal_like(k, params[name], stddev)
        else:
            fresh = reinit(k)[name]
            if jax.tree.structure(fresh) != jax.tree.structure(params[name]):
                raise ValueError(f"reinit(key)[{name!r}] does not match the layer's params")
        base = current if mode == "cascading" else dict(params)
        current = {**base, name: fresh}
        stages.append((name, {**variables, "params": current}))
    return stages
