"""Adapters from Flax modules to the model contract ``logit_fn(params, x) -> logits``.

For Linen the ``params`` of the contract is the whole variables dict (``{"params": ...}``
plus ``{"batch_stats": ...}`` for BatchNorm models), applied in evaluation mode. For NNX the
module is split once into a graph definition (static, closed over) and a state (the params
pytree of the contract) that is merged back inside the function.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
from flax import nnx

from jaxgrad._taps import INTERMEDIATES, PERTURBATIONS
from jaxgrad._validation import (
    KEY,
    POSITIVE,
    batch_array,
    checked,
    linen_module,
    nnx_module,
    variables_dict,
)
from jaxgrad.models.layers import get_activation
from jaxgrad.models.tapping import linen_taps, module_biases, nnx_biases, nnx_taps
from jaxgrad.types import Params, TappedLogitFn


@checked(bn_epsilon=POSITIVE)
def linen_logit_fn(
    model: nn.Module,
    *,
    bn_epsilon: float = 1e-5,
    apply_kwargs: Mapping[str, Any] | None = None,
    activation_field: str = "activation",
) -> TappedLogitFn:
    """``logit_fn(variables, x) = model.apply(variables, x, **apply_kwargs)``, with its taps declared.

    The result is a :class:`jaxgrad.types.TappedLogitFn`: called, it is the plain contract;
    the layer methods (Grad-CAM, FullGrad, guided backprop) use its declared

    * ``taps``: the output of every submodule, named by its path (``"Dense_0"``,
      ``"layer1_block1/bn1"``), for any Linen module, and the values the model taps itself
      with :func:`jaxgrad.models.tap` (``"hidden1_act"``);
    * ``biases``: :func:`jaxgrad.models.module_biases` with ``bn_epsilon``, keyed by the
      submodule whose output carries them;
    * ``with_activation`` for a module with an ``activation_field`` field (a callable, or an
      activation name for jaxgrad's models, with their optional ``beta``).

    Args:
      model: any Linen module applied as ``model.apply(variables, x, **apply_kwargs)``.
      bn_epsilon: the epsilon of the model's BatchNorm layers (Flax's default 1e-5).
      apply_kwargs: the keyword arguments that select evaluation mode. Default: ``{"train":
        False}``, ``{"training": False}`` or ``{"deterministic": True}``, the first that the
        module's ``__call__`` names, else none; pass others (``{"use_running_average":
        True}``) to match the module.
      activation_field: the field holding the elementwise activation (guided backprop).

    Equal modules give the same function object (a small cache), so a function jitted with
    the logit function as a static argument compiles once per model, not once per call.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxgrad.models import MnistCNN, init_variables, linen_logit_fn
      >>> model = MnistCNN()
      >>> variables = init_variables(model, jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
      >>> linen_logit_fn(model)(variables, jnp.zeros((2, 8, 8, 1))).shape
      (2, 10)
      >>> linen_logit_fn(model) is linen_logit_fn(MnistCNN())
      True
    """
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"model must be a flax.linen.Module, got {type(model).__name__}; for an NNX module "
            "use nnx_logit_fn, for a plain function or an Equinox module hooked_logit_fn"
        )
    if apply_kwargs is None:
        apply_kwargs = _evaluation_kwargs(model)
    kwargs = tuple(sorted(dict(apply_kwargs).items()))
    try:
        return _cached_linen_logit_fn(model, bn_epsilon, kwargs, activation_field)
    except TypeError:  # a module or argument that is not hashable: build a fresh one
        return _linen_logit_fn(model, bn_epsilon, kwargs, activation_field)


# The usual evaluation-mode flags of Linen modules, in the order they are looked for.
_EVAL_FLAGS = (("train", False), ("training", False), ("deterministic", True))


def _evaluation_kwargs(model: nn.Module) -> dict[str, Any]:
    """The first evaluation-mode flag of :data:`_EVAL_FLAGS` that ``__call__`` names, or ``{}``."""
    params = inspect.signature(type(model).__call__).parameters
    for name, value in _EVAL_FLAGS:
        if name in params:
            return {name: value}
    return {}


def _linen_logit_fn(
    model: nn.Module, bn_epsilon: float, apply_kwargs: tuple, activation_field: str
) -> TappedLogitFn:
    kwargs = dict(apply_kwargs)

    def logits(params: Params, x: jax.Array) -> jax.Array:
        return model.apply(params, x, **kwargs)

    def biases(params: Params) -> dict[str, jax.Array]:
        return module_biases(params, bn_epsilon=bn_epsilon)

    with_activation = None
    fields = {f.name for f in dataclasses.fields(model)}
    if activation_field in fields:
        act = getattr(model, activation_field)
        if isinstance(act, str):
            act = get_activation(act, getattr(model, "beta", 1.0))

        if callable(act):

            def with_activation(transform):
                clone = model.clone(**{activation_field: transform(act)})
                return _linen_logit_fn(clone, bn_epsilon, apply_kwargs, activation_field)

    return TappedLogitFn(
        logits=logits,
        taps=linen_taps(model, kwargs),
        biases=biases,
        with_activation=with_activation,
    )


_cached_linen_logit_fn = functools.lru_cache(maxsize=64)(_linen_logit_fn)


def _check_linen(model) -> None:
    """Training and ``linen_logit_fn`` need a Linen module whose ``__call__`` takes ``train``."""
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"model must be a flax.linen.Module taking (x, train), got {type(model).__name__}; "
            "for an NNX module or a plain function use nnx_logit_fn / a logit_fn for the "
            "attribution methods (jaxgrad's training helpers are Linen-only)"
        )
    params = inspect.signature(type(model).__call__).parameters
    if "train" not in params and not any(p.kind == p.VAR_KEYWORD for p in params.values()):
        raise TypeError(
            f"model ({type(model).__name__}) must take a train argument: __call__(self, x, "
            "train: bool = False) (True selects batch statistics and dropout in training)"
        )


@checked(model=linen_module, key=KEY, sample_x=batch_array)
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
    _check_linen(model)
    variables = model.init(key, sample_x, train=False)
    return {k: v for k, v in variables.items() if k not in (PERTURBATIONS, INTERMEDIATES)}


@checked(model=linen_module, variables=variables_dict, sample_x=batch_array)
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


@checked(module=nnx_module)
def nnx_logit_fn(
    module: Any, *, activation_field: str | None = None
) -> tuple[TappedLogitFn, Params]:
    """Splits a Flax NNX module into ``(logit_fn, params)`` following the contract.

    The logit function runs a copy of the module in evaluation mode (Dropout off, BatchNorm
    on its running averages), taken when ``nnx_logit_fn`` is called: the user's module is
    left as it was (in training mode if it was), and later changes to it do not reach
    ``logit_fn`` or ``params`` (call ``nnx_logit_fn`` again after training; once per model,
    since each call gives a new function, which ``jit`` compiles anew). ``params`` is the module's ``nnx.Param`` state,
    the argument that gradients, randomization and sharding act on; the remaining state
    (BatchNorm statistics, RNG counters) is fixed in evaluation mode and travels with the
    graph definition.

    ``logit_fn`` is a :class:`jaxgrad.types.TappedLogitFn` for the layer methods: its taps are
    the outputs of the submodules, named by their attribute paths (``"conv1"``,
    ``"layers/0"``), its biases those of :func:`jaxgrad.models.nnx_biases`, and with
    ``activation_field`` (the attribute, on the module or any submodule, that holds the
    elementwise activation it calls) it declares ``with_activation`` for guided backprop.

    Example:
      >>> from flax import nnx
      >>> import jax.numpy as jnp
      >>> logit_fn, params = nnx_logit_fn(nnx.Linear(4, 3, rngs=nnx.Rngs(0)))
      >>> logit_fn(params, jnp.ones((2, 4))).shape
      (2, 3)
    """
    copy = nnx.merge(*nnx.split(module), copy=True)  # new variables: later edits stay apart
    copy.eval()
    graphdef, params, rest = nnx.split(copy, nnx.Param, ...)

    return _nnx_tapped(graphdef, rest, activation_field, None), params


def _nnx_tapped(graphdef, rest, activation_field, transform) -> TappedLogitFn:
    def merge(params: Params):
        module = nnx.merge(graphdef, params, rest)
        if transform is not None:
            found = False
            for _, sub in nnx.iter_modules(module):
                act = getattr(sub, activation_field, None)
                if callable(act):
                    object.__setattr__(sub, activation_field, transform(act))
                    found = True
            if not found:
                raise ValueError(
                    f"activation_field={activation_field!r}: no module of the model has a "
                    "callable attribute of that name"
                )
        return module

    def logits(params: Params, x: jax.Array) -> jax.Array:
        return merge(params)(x)

    def biases(params: Params) -> dict[str, jax.Array]:
        return nnx_biases(merge(params))

    with_activation = None
    if activation_field is not None:

        def with_activation(t):
            return _nnx_tapped(graphdef, rest, activation_field, t)

    return TappedLogitFn(logits, nnx_taps(merge), biases, with_activation)


@checked(module=nnx_module)
def nnx_train_logit_fn(module: Any) -> tuple[Callable, Params, Params]:
    """The NNX module in training mode as a pure function: ``(train_logit_fn, params, state)``.

    ``train_logit_fn(params, state, x) -> (logits, new_state)`` runs a fresh copy of the
    module, in training mode (BatchNorm on batch statistics, Dropout on), and returns the
    state it updated (running averages, RNG counters). ``params`` is the ``nnx.Param`` state,
    ``state`` everything else. Being pure, it goes inside ``jax.jit``, ``jax.grad`` and
    :func:`jaxgrad.regularized_loss_with_aux` (as ``lambda p, z: train_logit_fn(p, state,
    z)``); every call merges copies of the variables (``nnx.merge(..., copy=True)``), which
    is what lets BatchNorm update its statistics inside a transform without Flax's
    ``TraceContextError``. Write the results back with ``nnx.update(module, params, state)``.
    """
    copy = nnx.merge(*nnx.split(module), copy=True)
    copy.train()
    graphdef, params, state = nnx.split(copy, nnx.Param, ...)

    def train_logit_fn(params: Params, state: Params, x: jax.Array):
        m = nnx.merge(graphdef, params, state, copy=True)
        return m(x), nnx.state(m, nnx.Not(nnx.Param))

    return train_logit_fn, params, state
