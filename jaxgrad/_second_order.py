"""A trace-time switch: the convolutions traced inside will have their input-gradients differentiated.

Double backprop (score matching, gradient norm, Jacobian matching) differentiates an
input-gradient again with respect to the weights. On XLA's CPU backend the kernel-gradient of
the input-dilated convolution that JAX writes for a strided convolution's input-gradient runs
on a slow generic path (seconds per op for the CIFAR ResNet-18's downsampling blocks), so
jaxgrad's convolution (:func:`jaxgrad.models.layers.conv_general_dilated`) writes that
input-gradient as the dense convolution's instead while :func:`second_order` is active.
"""

from __future__ import annotations

import contextlib
import threading

__all__ = ["active", "second_order"]

_STATE = threading.local()


@contextlib.contextmanager
def second_order():
    """Inside this block, convolutions are traced for differentiating their input-gradients.

    jaxgrad's double-backprop losses enter it around the passes whose input-gradients they
    differentiate again (the score-matching and gradient-norm regularizers, Hutchinson's
    Hessian-vector products, the Jacobian-matching student). There, on a CPU, a strided
    convolution of jaxgrad's layers (its models, and any model through
    :func:`jaxgrad.models.fast_logit_fn`) writes its input-gradient as the dense (stride-1)
    convolution's of the zero-interleaved cotangent, instead of JAX's input-dilated
    convolution, whose own kernel-gradient runs on XLA CPU's slow generic path; the
    dense form costs the strided layers' input-gradients 4x their FLOPs, so first-order work
    (cross-entropy training, attribution) keeps the plain form. Same values and derivatives
    either way; other backends always take the plain form (``jax.lax.platform_dependent``).

    Trace-time only, and per thread. The choice is made when a convolution is traced: a
    function that ``jax.jit`` traced and cached outside the block keeps its form inside it,
    and one first traced inside keeps the dense form later (correct either way, only the
    speed differs).
    """
    before = active()
    _STATE.on = True
    try:
        yield
    finally:
        _STATE.on = before


def active() -> bool:
    """Whether :func:`second_order` is active in this thread."""
    return getattr(_STATE, "on", False)
