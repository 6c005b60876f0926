"""Type aliases and the model contracts shared by every jaxgrad module (a leaf module).

Two contracts:

* :class:`LogitFn`, what every gradient-based function takes: ``logit_fn(params, x) ->
  logits``. Any JAX callable with that signature works.
* :class:`TappedLogitFn`, what the layer methods (Grad-CAM, FullGrad, guided backprop) take
  in its place: a logit function that also declares the model internals those methods need
  (named intermediate values, the biases they carry, a way to swap the activation). A layer
  method given a plain logit function refuses it by name; it never reaches for undeclared
  attributes. ``jaxgrad.models`` builds one for any model: ``linen_logit_fn`` (any Linen
  module), ``nnx_logit_fn`` (any NNX module) and ``hooked_logit_fn`` (a plain function or an
  Equinox module that passes its values through a ``tap`` callback);
  ``jaxgrad.gradients.shift_logits`` keeps it tapped, so a layer method explains the shifted
  model, not the original.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import jax

Array = jax.Array
ArrayLike = jax.typing.ArrayLike
PRNGKey = jax.Array
Params = Any  # a pytree of arrays (for Linen models, the whole variables dict)
Activation = Callable[[Array], Array]


class LogitFn(Protocol):
    """A pure classifier in evaluation mode.

    ``logit_fn(params, x) -> logits`` with ``x: [B, *S]`` float and ``logits: [B, K]``.
    Examples must not interact (no batch statistics), and ``params`` must never be
    closed over, so that ``jit``, ``vmap``, sharding and parameter randomization all
    act on the params pytree.
    """

    def __call__(self, params: Params, x: Array) -> Array: ...


TapsFn = Callable[[Params, Array, Mapping[str, Array] | None], tuple[Array, dict[str, Array]]]


@dataclasses.dataclass(frozen=True)
class TappedLogitFn:
    """A :class:`LogitFn` that declares the internals layer methods need.

    Calling it is the plain contract, ``(params, x) -> logits [B, K]``.

    Attributes:
      logits: ``(params, x) -> [B, K]``, the classifier itself.
      taps: ``(params, x, perturbations) -> (logits, values)``: ``values`` maps each tap's
        path (``"hidden2_act"``, ``"layer1_block1/bn1_out"``) to its value ``[B, ...]``;
        ``perturbations`` (a mapping from some of those paths to arrays of their shapes, or
        None) is added to those values, so the gradient with respect to a zero perturbation
        is the gradient with respect to the intermediate value.
      biases: ``params -> {tap path: bias [features]}``, the bias each tap's value carries
        (a layer's bias, or BatchNorm's effective bias in evaluation mode), for FullGrad; None
        when the model does not declare them.
      with_activation: ``transform -> LogitFn``, the same classifier with each elementwise
        activation ``a`` replaced by ``transform(a)`` (guided backpropagation); None when the
        model does not declare its activation.
    """

    logits: Callable[[Params, Array], Array]
    taps: TapsFn
    biases: Callable[[Params], dict[str, Array]] | None = None
    with_activation: Callable[[Callable[[Activation], Activation]], LogitFn] | None = None

    def __call__(self, params: Params, x: Array) -> Array:
        return self.logits(params, x)


_HINTS = {
    "biases": (
        " (jaxgrad.gradients.shift_logits drops it: an arbitrary shift g(x) has no input and "
        "bias decomposition; shift_to_target_map keeps it)"
    ),
    "with_activation": (
        " (linen_logit_fn declares it for a module with an `activation` field that every "
        "elementwise activation of the module uses, nnx_logit_fn with activation_field=, "
        "hooked_logit_fn with with_activation=)"
    ),
}


def require_tapped(logit_fn: Any, caller: str, needs: str = "taps") -> TappedLogitFn:
    """``logit_fn`` if it is a :class:`TappedLogitFn` declaring ``needs``; else a named error.

    Args:
      logit_fn: what the caller passed.
      caller: the layer method's name, for the message.
      needs: ``"taps"``, ``"biases"`` or ``"with_activation"``.
    """
    if not isinstance(logit_fn, TappedLogitFn):
        raise TypeError(
            f"{caller} needs the model's internals: logit_fn must be a jaxgrad.types."
            "TappedLogitFn (jaxgrad.models.linen_logit_fn(model), nnx_logit_fn(module)[0], "
            "or hooked_logit_fn(fn) for a plain function or an Equinox module), got a plain "
            f"{type(logit_fn).__name__}; a function wrapping a tapped model hides its taps "
            "(jaxgrad.gradients.shift_logits keeps them)"
        )
    if getattr(logit_fn, needs) is None:
        raise ValueError(
            f"{caller} needs logit_fn.{needs}, which this TappedLogitFn does not declare"
            + _HINTS.get(needs, "")
        )
    return logit_fn


__all__ = [
    "LogitFn",
    "TappedLogitFn",
    "require_tapped",
]
