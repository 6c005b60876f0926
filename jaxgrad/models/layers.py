"""Building blocks shared by the models: activations, pooling, convolution (taps: ``jaxgrad._taps``).

Max-pooling is written as reshape + max rather than ``lax.reduce_window``: on XLA's CPU
backend the gradient of ``reduce_window`` (select-and-scatter) is slow, and the reshape form
made input-gradients of the MNIST CNN 1.5x faster (batch 64, IG with 64 steps, XLA CPU). The two forms agree on
the forward pass; where several inputs of a window tie for the maximum, the reshape form
splits the gradient equally between them instead of sending all of it to one.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

from jaxgrad import _second_order
from jaxgrad._second_order import second_order
from jaxgrad._taps import tap
from jaxgrad._validation import POSITIVE, checked
from jaxgrad.types import Activation

__all__ = [
    "Activation",
    "conv_general_dilated",
    "get_activation",
    "max_pool_2x2",
    "second_order",
    "softplus",
    "tap",
]


@checked(beta=POSITIVE)
def softplus(x: jax.Array, beta: float = 1.0) -> jax.Array:
    """Softplus with sharpness ``beta``: ``log(1 + exp(beta * x)) / beta``.

    As ``beta`` grows it tends to ReLU; unlike ReLU its second derivative is non-zero
    everywhere, which score matching (a Hessian trace in the input) needs.
    """
    return jax.nn.softplus(beta * x) / beta


def get_activation(activation: str | Activation, beta: float = 1.0) -> Activation:
    """Resolves an activation given by name (``relu``, ``softplus``) or as a callable.

    Args:
      activation: ``"relu"``, ``"softplus"`` (with ``beta``) or any elementwise callable,
        e.g. a ReLU with a guided-backprop ``custom_vjp``.
      beta: sharpness of the softplus; ignored otherwise.
    """
    if callable(activation):
        return activation
    if activation == "relu":
        return nn.relu
    if activation == "softplus":
        if not beta > 0:
            raise ValueError(f"softplus beta must be > 0, got {beta}")
        return functools.partial(softplus, beta=beta)
    raise ValueError(f"activation must be 'relu', 'softplus' or a callable, got {activation!r}")


def max_pool_2x2(x: jax.Array) -> jax.Array:
    """2x2 max-pooling with stride 2 (VALID: an odd last row/column is dropped).

    Args:
      x: ``[B, H, W, C]``.

    Returns:
      ``[B, H // 2, W // 2, C]``.
    """
    if x.ndim != 4:
        raise ValueError(f"x must have rank 4 [B, H, W, C], got shape {x.shape}")
    b, h, w, c = x.shape
    x = x[:, : h // 2 * 2, : w // 2 * 2]
    return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def _strided_as_dense(conv, lhs, rhs, dn, out_shape):
    """``conv(lhs, rhs)`` of a strided convolution, as the dense (stride 1) one subsampled."""
    strides = [int(v) for v in conv.keywords["window_strides"]]
    padding = conv.keywords["padding"]
    in_spatial = [lhs.shape[i] for i in dn.lhs_spec[2:]]
    window = [rhs.shape[i] for i in dn.rhs_spec[2:]]
    if isinstance(padding, str):
        padding = jax.lax.padtype_to_pads(in_spatial, window, strides, padding)
    dense = conv.func(
        lhs,
        rhs,
        window_strides=(1,) * len(strides),
        padding=padding,
        dimension_numbers=dn,
        precision=conv.keywords["precision"],
        preferred_element_type=conv.keywords["preferred_element_type"],
    )
    limit, step = list(dense.shape), [1] * dense.ndim
    for i, st in zip(dn.out_spec[2:], strides, strict=True):
        limit[i], step[i] = (out_shape[i] - 1) * st + 1, st
    return jax.lax.slice(dense, [0] * dense.ndim, limit, step)


def conv_general_dilated(
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides,
    padding,
    lhs_dilation=None,
    rhs_dilation=None,
    dimension_numbers=None,
    feature_group_count: int = 1,
    batch_group_count: int = 1,
    precision=None,
    preferred_element_type=None,
    out_sharding=None,
) -> jax.Array:
    """``lax.conv_general_dilated`` whose input-gradient uses an explicitly transposed kernel.

    Same values and derivatives (of every order, forward and reverse) as
    ``lax.conv_general_dilated``; a ``custom_jvp`` whose tangent in the input is written with
    the kernel's feature axes swapped in memory. The difference is in the backward pass,
    the transpose of that tangent: JAX's rule for the input-gradient convolves with the kernel by swapping
    its feature dimensions in the dimension numbers (``01oi`` in the optimized HLO). Measured
    on XLA's CPU backend (jax 0.10.2), such a convolution inside a loop (``lax.scan``,
    ``lax.map``, ``fori_loop``) ran 3.6x slower than standalone (64 ms against 18 ms for a
    ``[64, 14, 14, 64] -> 32`` channel 5x5 convolution), which made chunked Integrated
    Gradients 2x slower than separate calls. Here the kernel is transposed explicitly, so
    the backward convolution has the canonical ``01io`` layout inside loops too: a scan of
    16 input-gradients of the MNIST CNN went from 1.95 s to 1.00 s. Flax's ``nn.Conv`` and
    ``nnx.Conv`` take it as ``conv_general_dilated=``; grouped convolutions, and a call with
    an explicit ``out_sharding``, fall back to the plain rule.

    Inside :func:`jaxgrad.models.second_order` (which jaxgrad's double-backprop losses enter), a strided
    convolution's input-gradient is, on a CPU, the dense convolution's, whose own weight-
    gradient stays on XLA's fast path: the Taylor score-matching step of the CIFAR ResNet-18
    went from 16.5 s to 8.0 s (batch 64, 2-core CPU).
    """
    if any(int(v) < 1 for v in window_strides):
        raise ValueError(f"window_strides must be positive integers, got {tuple(window_strides)}")
    conv = functools.partial(
        jax.lax.conv_general_dilated,
        window_strides=window_strides,
        padding=padding,
        lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation,
        feature_group_count=feature_group_count,
        batch_group_count=batch_group_count,
        precision=precision,
        preferred_element_type=preferred_element_type,
    )
    dn = jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
    if out_sharding is not None:
        return conv(lhs, rhs, dimension_numbers=dn, out_sharding=out_sharding)
    if feature_group_count != 1 or batch_group_count != 1:
        return conv(lhs, rhs, dimension_numbers=dn)
    out_dim, in_dim, *spatial = dn.rhs_spec
    perm = list(range(rhs.ndim))
    perm[out_dim], perm[in_dim] = in_dim, out_dim
    dn_swapped = jax.lax.ConvDimensionNumbers(dn.lhs_spec, (in_dim, out_dim, *spatial), dn.out_spec)

    dense_strides = (
        _second_order.active()
        and any(int(v) > 1 for v in window_strides)
        and all(int(v) == 1 for v in (lhs_dilation or ()))
        and all(int(v) == 1 for v in (rhs_dilation or ()))
    )

    @jax.custom_jvp
    def f(lhs, rhs):
        return conv(lhs, rhs, dimension_numbers=dn)

    def f_jvp(primals, tangents):
        lhs, rhs = primals
        d_lhs, d_rhs = tangents
        out = f(lhs, rhs)
        terms = []
        if not isinstance(d_lhs, SymbolicZero):
            # Linear in d_lhs through a kernel whose features are swapped in memory: its
            # transpose (the input-gradient) is then a canonical convolution.
            rhs_t = jnp.transpose(rhs, perm)
            if dense_strides:  # CPU: dense; elsewhere the plain strided convolution
                terms.append(
                    jax.lax.platform_dependent(
                        d_lhs,
                        rhs_t,
                        cpu=functools.partial(
                            _strided_as_dense, conv, dn=dn_swapped, out_shape=out.shape
                        ),
                        default=functools.partial(conv, dimension_numbers=dn_swapped),
                    )
                )
            else:
                terms.append(conv(d_lhs, rhs_t, dimension_numbers=dn_swapped))
        if not isinstance(d_rhs, SymbolicZero):
            terms.append(conv(lhs, d_rhs, dimension_numbers=dn))
        d_out = sum(terms[1:], terms[0]) if terms else jnp.zeros_like(out)
        return out, d_out

    f.defjvp(f_jvp, symbolic_zeros=True)
    return f(lhs, rhs)
