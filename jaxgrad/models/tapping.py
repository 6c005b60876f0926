"""Taps for any JAX model: the internals that the layer methods need, without rewriting it.

The layer methods (Grad-CAM, FullGrad, guided backprop) take a
:class:`jaxgrad.types.TappedLogitFn`. This module builds one for each kind of model:

* a **Linen** module, jaxgrad's or not: every submodule's output is a tap named by its path
  (``"Dense_0"``, ``"block1/conv"``), found by intercepting the submodules' ``__call__``
  (``flax.linen.intercept_methods``), beside the values the model itself taps with
  :func:`jaxgrad.models.tap` (:func:`linen_taps`);
* an **NNX** module: every submodule's output, named by its attribute path (``"conv1"``,
  ``"layers/0"``), on a fresh copy of the module inside the function (:func:`nnx_taps`; the
  user's module is never touched);
* a **plain function** or an **Equinox** module: the function takes a third argument, a
  callback ``tap(name, value) -> value`` that it passes its intermediate values through
  (:func:`hooked_logit_fn`; the default ``tap`` is the identity, so nothing else changes).

Biases for FullGrad are read from the modules that produce a tap (a layer's ``bias``, or the
effective bias of a BatchNorm in evaluation mode), keyed by the tap they are added to.
Values computed inside lifted transforms (``nn.scan``, ``nn.remat``, ``nnx.scan``) are not
taps: they live in the transform's own trace. :func:`tap_shapes` lists a model's taps.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx
from flax.core.tracers import current_trace

from jaxgrad._taps import INTERMEDIATES, PERTURBATIONS, flatten_paths, unflatten_paths
from jaxgrad._validation import POSITIVE, checked, nnx_module, variables_dict
from jaxgrad.types import Activation, LogitFn, Params, TappedLogitFn

TapCallback = Callable[[str, jax.Array], jax.Array]


def identity_tap(name: str, value: jax.Array) -> jax.Array:
    """The default ``tap`` of a hooked function: returns ``value`` unchanged."""
    del name
    return value


class _Recorder:
    """A ``tap(name, value)`` callback: adds the perturbation of ``name`` and records the value."""

    def __init__(self, perturbations: Mapping[str, jax.Array] | None):
        self.perturbations = dict(perturbations or {})
        self.values: dict[str, jax.Array] = {}

    def __call__(self, name: str, value: jax.Array) -> jax.Array:
        if not isinstance(name, str) or not name:
            raise TypeError(f"tap names must be non-empty strings, got {name!r}")
        return _record(self.values, self.perturbations, name, value)


def hooked_logit_fn(
    fn: Callable[[Params, jax.Array, TapCallback], jax.Array],
    *,
    per_example: bool = False,
    biases: Callable[[Params], dict[str, jax.Array]] | None = None,
    with_activation: Callable[[Callable[[Activation], Activation]], LogitFn] | None = None,
) -> TappedLogitFn:
    """A :class:`jaxgrad.types.TappedLogitFn` from a function that passes values through ``tap``.

    ``fn(params, x, tap) -> logits`` computes the logits and calls ``tap(name, value)`` on each
    intermediate value a layer method may use, continuing with what ``tap`` returns (a layer
    method adds a zero perturbation there to take gradients). With ``tap=identity_tap`` it is
    the plain model.

    Args:
      fn: the model, ``(params, x [B, *S], tap) -> [B, K]``; with ``per_example=True``,
        ``(params, x [*S], tap) -> [K]`` on one example (an Equinox module), vmapped here.
      per_example: whether ``fn`` takes one example (values are then ``[B, ...]`` after the vmap).
      biases: ``params -> {tap name: bias [features]}``, the bias added last to each named
        value, for FullGrad (optional).
      with_activation: ``transform -> logit_fn`` for guided backprop: the model with its
        elementwise activation ``a`` replaced by ``transform(a)`` (optional).

    Example:
      >>> import jax.numpy as jnp
      >>> def mlp(params, x, tap=identity_tap):
      ...     h = tap("hidden", x @ params["w1"] + params["b1"])
      ...     return jax.nn.relu(h) @ params["w2"]
      >>> lf = hooked_logit_fn(mlp, biases=lambda p: {"hidden": p["b1"]})
      >>> params = {"w1": jnp.ones((4, 3)), "b1": jnp.zeros(3), "w2": jnp.ones((3, 2))}
      >>> logits, values = lf.taps(params, jnp.ones((5, 4)), None)
      >>> logits.shape, values["hidden"].shape
      ((5, 2), (5, 3))
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable as fn(params, x, tap), got {type(fn).__name__}")

    def run(params, x, perturbations):
        if not per_example:
            rec = _Recorder(perturbations)
            return fn(params, x, rec), rec.values

        def one(xi, pi):
            rec = _Recorder(pi)
            return fn(params, xi, rec), rec.values

        return jax.vmap(one)(x, dict(perturbations or {}))

    def logits(params, x):
        if per_example:
            return jax.vmap(lambda xi: fn(params, xi, identity_tap))(x)
        return fn(params, x, identity_tap)

    return TappedLogitFn(logits=logits, taps=run, biases=biases, with_activation=with_activation)


# --- Linen -------------------------------------------------------------------------------


def _module_path(module: nn.Module) -> str:
    scope = module.scope
    return "/".join(scope.path) if scope is not None else ""


def linen_taps(
    model: nn.Module, apply_kwargs: Mapping[str, Any]
) -> Callable[[Params, jax.Array, Mapping[str, jax.Array] | None], tuple[jax.Array, dict]]:
    """``taps(variables, x, perturbations)`` for any Linen module.

    The values are the model's own :func:`jaxgrad.models.tap` values (``"hidden1_out"``) and
    the output of every submodule's ``__call__`` that is one array, named by the submodule's
    path (``"hidden1"``, ``"layer1_block1/bn1"``). A submodule called twice gets
    ``"<path>#2"`` for its second call.
    """

    def apply(variables, x):
        return model.apply(variables, x, **apply_kwargs, mutable=[INTERMEDIATES])

    def own_taps(variables, x) -> set[str]:
        """The model's :func:`jaxgrad.models.tap` paths: sown values with a perturbation slot."""

        def shapes(v):
            _, state = model.apply(v, x, **apply_kwargs, mutable=[INTERMEDIATES, PERTURBATIONS])
            return state.get(PERTURBATIONS, {})

        return set(flatten_paths(jax.eval_shape(shapes, variables)))

    def taps(params, x, perturbations=None):
        perturbations = dict(perturbations or {})
        variables = dict(params)
        own = own_taps(variables, x)  # a plain self.sow value has no slot: not a tap
        mine = {k: v for k, v in perturbations.items() if k in own}
        if mine:
            variables[PERTURBATIONS] = unflatten_paths(mine)
        values: dict[str, jax.Array] = {}
        outer = current_trace()

        def intercept(next_fun, args, kwargs, context):
            out = next_fun(*args, **kwargs)
            if context.method_name != "__call__" or not isinstance(out, jax.Array):
                return out
            if current_trace() != outer:  # inside nn.scan, nn.remat, ...: not a tap
                return out
            path = _module_path(context.module)
            return _record(values, perturbations, path, out) if path else out

        with nn.intercept_methods(intercept):
            out, state = apply(variables, x)
        sown = flatten_paths(state.get(INTERMEDIATES, {}))
        return out, {**values, **{k: v for k, v in sown.items() if k in own}}

    return taps


def _record(values: dict, perturbations: Mapping, path: str, out: jax.Array) -> jax.Array:
    """Records ``out`` as the tap ``path`` (``path#2``, ... for later calls), perturbed."""
    name, n = path, 1
    while name in values:
        n += 1
        name = f"{path}#{n}"
    if name in perturbations:
        out = out + perturbations[name]
    values[name] = out
    return out


@checked(variables=variables_dict, bn_epsilon=POSITIVE)
def module_biases(variables: Params, *, bn_epsilon: float = 1e-5) -> dict[str, jax.Array]:
    """The bias each Linen submodule adds to its output, keyed by the submodule's path.

    A submodule with a ``bias`` param (``Dense``, ``Conv``): that bias. A BatchNorm in
    evaluation mode (``z = gamma (h - mean) / sqrt(var + eps) + beta``): the effective bias
    ``beta - mean * gamma / sqrt(var + eps)``; one without ``beta`` (``use_bias=False``) still
    carries ``-mean * gamma / sqrt(var + eps)``. A ``bias`` param of the top-level module
    itself is keyed ``""`` (no tap can carry it).

    Args:
      variables: ``{"params": ..., "batch_stats": ...}``.
      bn_epsilon: the BatchNorm epsilon (Flax's default 1e-5).
    """
    params = flatten_paths(variables.get("params", {}))
    stats = flatten_paths(variables.get("batch_stats", {}))
    out = {}
    for path, value in params.items():
        module, _, leaf = path.rpartition("/")
        if leaf == "bias" and f"{module}/mean" not in stats:
            out[module] = value
    for path, mean in stats.items():
        module, _, leaf = path.rpartition("/")
        if leaf != "mean" or f"{module}/var" not in stats:
            continue
        scale = params.get(f"{module}/scale", jnp.ones_like(mean))
        beta = params.get(f"{module}/bias", jnp.zeros_like(mean))
        out[module] = beta - mean * scale / jnp.sqrt(stats[f"{module}/var"] + bn_epsilon)
    return out


# --- NNX ---------------------------------------------------------------------------------

_HOOKED_CLASSES: dict[type, type] = {}
_LOCAL = threading.local()  # each thread's stack of active hooks


def _hooks() -> list[Callable[[Any, Any], Any]]:
    if not hasattr(_LOCAL, "hooks"):
        _LOCAL.hooks = []
    return _LOCAL.hooks


def _hooked_class(cls: type) -> type:
    """A subclass of the NNX module class ``cls`` whose ``__call__`` reports its output."""
    if cls not in _HOOKED_CLASSES:

        def __call__(self, *args, **kwargs):
            out = super(sub, self).__call__(*args, **kwargs)
            hooks = _hooks()
            return hooks[-1](self, out) if hooks else out

        sub = type(
            cls.__name__,
            (cls,),
            {"__call__": __call__, "__module__": cls.__module__, "__qualname__": cls.__qualname__},
        )
        _HOOKED_CLASSES[cls] = sub
    return _HOOKED_CLASSES[cls]


def nnx_path(path: tuple) -> str:
    """An NNX attribute path as a tap name: ``("layers", 0) -> "layers/0"``."""
    return "/".join(str(p) for p in path)


def nnx_taps(merge: Callable[[Params], nnx.Module]):
    """``taps(params, x, perturbations)`` for an NNX module rebuilt by ``merge(params)``.

    Every submodule of the fresh module (not the user's) is given a subclass whose
    ``__call__`` adds the perturbation of its path and records its output.
    """

    def taps(params, x, perturbations=None):
        perturbations = dict(perturbations or {})
        module = merge(params)
        names: dict[int, str] = {}
        for path, sub in nnx.iter_modules(module):
            if path and callable(sub):
                names[id(sub)] = nnx_path(path)
                object.__setattr__(sub, "__class__", _hooked_class(type(sub)))
        values: dict[str, jax.Array] = {}
        outer = current_trace()

        def hook(sub, out):
            path = names.get(id(sub))
            if path is None or not isinstance(out, jax.Array) or current_trace() != outer:
                return out
            return _record(values, perturbations, path, out)

        hooks = _hooks()
        hooks.append(hook)
        try:
            out = module(x)
        finally:
            hooks.pop()
        return out, values

    return taps


@checked(module=nnx_module)
def nnx_biases(module: nnx.Module) -> dict[str, jax.Array]:
    """The bias each NNX submodule adds to its output, keyed by its path.

    ``nnx.BatchNorm`` in evaluation mode: ``bias - mean * scale / sqrt(var + epsilon)`` with the
    module's own epsilon; any other submodule with a ``bias`` parameter (``Linear``, ``Conv``):
    that bias.
    """
    out = {}
    for path, sub in nnx.iter_modules(module):
        if isinstance(sub, nnx.BatchNorm):
            mean = sub.mean[...]
            scale = sub.scale[...] if sub.scale is not None else jnp.ones_like(mean)
            bias = sub.bias[...] if sub.bias is not None else jnp.zeros_like(mean)
            out[nnx_path(path)] = bias - mean * scale / jnp.sqrt(sub.var[...] + sub.epsilon)
        elif isinstance(getattr(sub, "bias", None), nnx.Param):
            out[nnx_path(path)] = sub.bias[...]
    return out


def tap_shapes(logit_fn: TappedLogitFn, params: Params, x: jax.Array) -> dict[str, tuple]:
    """The taps of ``logit_fn`` (the ``layer=`` names of the layer methods) and their shapes.

    Computed abstractly (``jax.eval_shape``): nothing runs.

    Example:
      >>> import jax.numpy as jnp
      >>> lf = hooked_logit_fn(lambda p, x, tap: tap("out", x @ p))
      >>> tap_shapes(lf, jnp.ones((4, 3)), jnp.ones((2, 4)))
      {'out': (2, 3)}
    """
    if not isinstance(logit_fn, TappedLogitFn):
        raise TypeError(
            f"logit_fn must be a jaxgrad.types.TappedLogitFn, got {type(logit_fn).__name__}"
        )
    _, values = jax.eval_shape(lambda p, z: logit_fn.taps(p, z, None), params, x)
    return {k: tuple(v.shape) for k, v in sorted(values.items())}
