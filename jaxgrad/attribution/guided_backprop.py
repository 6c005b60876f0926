"""Guided backpropagation (Springenberg et al. 2015, arXiv 1412.6806).

The gradient of the target logit where every activation's backward pass also drops negative
incoming gradients: for ReLU, ``d_in = 1[z > 0] * relu(d_out)`` (PyTorch/Captum's rule; the
derivative at 0 is 0). The rule is a ``custom_vjp`` around the model's own activation
(:func:`guided`), so the forward pass is unchanged; for a smooth activation ``a`` the same
construction gives ``a'(z) * relu(d_out)``. ``guided_backprop`` rebuilds the Linen model with
``activation=guided(<its activation>)`` through the ``with_activation`` that a
:class:`jaxgrad.types.TappedLogitFn` declares (``jaxgrad.models.linen_logit_fn`` does for
any Linen module with ``activation`` and optional ``beta`` fields).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxgrad._validation import (
    CALLABLE,
    check_inputs,
    checked,
)
from jaxgrad.attribution._common import multi_target
from jaxgrad.gradients import input_gradients
from jaxgrad.types import Activation, ArrayLike, Params, TappedLogitFn, require_tapped


@checked(activation=CALLABLE)
def guided(activation: Activation) -> Activation:
    """An elementwise ``activation`` whose backward pass passes only positive gradients.

    Example:
      >>> g = jax.grad(lambda z: jnp.sum(guided(jax.nn.relu)(z) * jnp.array([1., -1., 1.])))
      >>> g(jnp.array([1., 1., -1.])).tolist()
      [1.0, 0.0, 0.0]
    """
    if getattr(activation, "_jaxgrad_guided", False):
        return activation

    @jax.custom_vjp
    def act(z):
        return activation(z)

    def fwd(z):
        return activation(z), z

    def bwd(z, g):
        slope = jax.jvp(activation, (z,), (jnp.ones_like(z),))[1]
        return (slope * jax.nn.relu(g),)

    act.defvjp(fwd, bwd)
    act._jaxgrad_guided = True
    return act


@multi_target
def guided_backprop(
    logit_fn: TappedLogitFn,
    params: Params,
    x: ArrayLike,
    target: ArrayLike,
    *,
    key: jax.Array | None = None,
) -> jax.Array:
    """Guided-backpropagation map, ``[B, *S]``, signed.

    Args:
      logit_fn: a :class:`jaxgrad.types.TappedLogitFn` declaring ``with_activation``
        (``jaxgrad.models.linen_logit_fn(model)`` for a model with an ``activation`` field);
        a plain logit function is refused.
      params: the model's variables.
      x: ``[B, *S]``.
      target: ``[B]`` (or ``[B, T]``) int.
      key: unused (deterministic).
    """
    del key
    lf = require_tapped(logit_fn, "guided_backprop", "with_activation")
    x, target = check_inputs(x, target)
    return input_gradients(lf.with_activation(guided), params, x, target)
