"""``fast_logit_fn(logit_fn)``: any model's slow primitives rewritten into their fast forms.

A model written with stock layers (``flax.linen.Conv`` / ``nnx.Conv``, ``nn.max_pool``, plain
``lax.conv_general_dilated`` and ``lax.reduce_window``) differentiates through two operations
that XLA's CPU backend runs slowly, above all inside the loops of chunked attribution methods:

* max-pooling's gradient, ``select_and_scatter_add``; and
* the input-gradient of a convolution, which JAX's transpose rule writes with the kernel's
  feature axes swapped in the dimension numbers (a non-canonical layout, 3.6x slower in a loop;
  see :func:`jaxgrad.models.conv_general_dilated`).

:func:`fast_logit_fn` traces the function to a jaxpr and evaluates it with those two primitives
replaced (inside ``jit`` bodies too): every ``conv_general_dilated`` by
:func:`jaxgrad.models.conv_general_dilated` (same values and derivatives, a canonical kernel
layout in the backward pass), and every ``reduce_window_max`` whose windows tile the input
(window = stride, no padding, no dilation: the 2x2 / stride 2 pooling of CNNs) by a reshape and
a max whose gradient goes to the same input as JAX's rule sends it, the first maximum of the
window in row-major order, ties included. Everything else is bound
unchanged (custom derivatives, loops and conditionals included, whose bodies are not rewritten:
a model under ``nn.remat`` or ``nn.scan`` keeps its own layers there). Values and derivatives
of every order are the original's, with two exceptions at windows where the max has no
well-defined input: a window of -inf everywhere sends its tangent to its first input (JAX's
reverse mode does the same, its forward mode gives 0), and a window holding NaN gives a zero
tangent (JAX's passes the one after the last NaN).
"""

from __future__ import annotations

import contextlib
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import ClosedJaxpr, DropVar, Literal

from jaxgrad.models.layers import conv_general_dilated
from jaxgrad.types import LogitFn

__all__ = ["fast_logit_fn", "tiled_max_pool"]


def _tiles(x: jax.Array, window: tuple[int, ...]) -> tuple[jax.Array, tuple[int, ...]]:
    """``x`` cropped and reshaped to ``[..., d_i // w_i, w_i, ...]``, and the window axes."""
    shape, axes = [], []
    for d, w in zip(x.shape, window, strict=True):
        shape += [d // w, w]
        axes.append(len(shape) - 1)
    x = x[tuple(slice(0, d // w * w) for d, w in zip(x.shape, window, strict=True))]
    return x.reshape(shape), tuple(axes)


def tiled_max_pool(x: jax.Array, window: tuple[int, ...]) -> jax.Array:
    """Max over non-overlapping windows (``reduce_window_max`` with stride = window, VALID).

    The same values as ``lax.reduce_window(x, -inf, lax.max, window, window, "VALID")`` and
    the same reverse-mode derivatives: a window's gradient goes to its first maximal input in
    row-major order, as XLA's ``select_and_scatter`` does, so tied inputs (flat image
    regions) get the same gradient. (:func:`jaxgrad.models.max_pool_2x2` splits it equally
    between ties instead.) Forward mode follows the same first maximum, where JAX's own rule
    leaves the choice between ties to the backend.

    Args:
      x: float array of any rank.
      window: one positive window size per axis of ``x`` (``(1, 2, 2, 1)`` for 2x2 pooling
        of ``[B, H, W, C]``); a trailing remainder that fills no window is dropped.

    Returns:
      ``x.shape[i] // window[i]`` along each axis.
    """
    x = jnp.asarray(x)
    if not isinstance(window, (tuple, list)) or len(window) != x.ndim:
        raise ValueError(f"window must have one size per axis of x ({x.ndim}), got {window}")
    sizes = []
    for w in window:
        if isinstance(w, jax.core.Tracer):
            raise ValueError(
                "window must be static (Python or NumPy integers): under jit, mark it static "
                f"(jax.jit(..., static_argnums=...)), got a traced {w.aval}"
            )
        if isinstance(w, (bool, np.bool_)) or not isinstance(w, (int, np.integer)) or w < 1:
            raise ValueError(f"window sizes must be positive integers, got {window}")
        sizes.append(int(w))
    return _tiled_max(x, tuple(sizes))


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _tiled_max(x, window):
    tiles, axes = _tiles(x, window)
    return tiles.max(axis=axes)


def _first_maximum(tiles: jax.Array, axes: tuple[int, ...]) -> jax.Array:
    """Mask of each window's first maximum in row-major order over the window ``axes``.

    Counted in place (prefix sums of the hits, fastest window axis first, as slices and adds),
    without moving the window axes: a transpose there cost more than the pooling it replaces.
    """
    hit = (tiles == tiles.max(axis=axes, keepdims=True)).astype(jnp.int32)
    axes = tuple(ax for ax in axes if tiles.shape[ax] > 1)
    if not axes:
        return hit == 1

    def prefix(a, ax):
        return jax.lax.associative_scan(jnp.add, a, axis=ax)

    count = prefix(hit, axes[-1])
    block = jnp.sum(hit, axis=axes[-1], keepdims=True)
    for ax in reversed(axes[:-1]):
        count = count + prefix(block, ax) - block  # hits in earlier slices along ax
        block = jnp.sum(block, axis=ax, keepdims=True)
    return (hit == 1) & (count == 1)


@_tiled_max.defjvp
def _tiled_max_jvp(window, primals, tangents):
    (x,), (dx,) = primals, tangents
    tiles, axes = _tiles(x, window)
    first = jax.lax.stop_gradient(_first_maximum(tiles, axes))
    # The value is read at the same input, so derivatives of this rule (second order) also
    # follow the first maximum rather than jnp.max's equal split between ties; by selection,
    # not a product with the mask, so that -inf elsewhere in the window stays out. A window
    # holding NaN has no maximum to select: its value is the max's (NaN), as the original's.
    value = jnp.where(
        jnp.any(first, axis=axes),
        jnp.sum(jnp.where(first, tiles, jnp.asarray(-0.0, tiles.dtype)), axis=axes),  # keeps -0.0
        tiles.max(axes),
    )
    tangent = jnp.sum(jnp.where(first, _tiles(dx, window)[0], 0), axis=axes)
    return value, tangent


def _reduce_window_max(invals, params):
    (x,) = invals
    window, strides = params["window_dimensions"], params["window_strides"]
    tiling = (
        tuple(window) == tuple(strides)
        and all(tuple(p) == (0, 0) for p in params["padding"])
        and all(d == 1 for d in params["base_dilation"])
        and all(d == 1 for d in params["window_dilation"])
        and jnp.issubdtype(x.dtype, jnp.floating)
    )
    return _tiled_max(x, tuple(window)) if tiling else None


_CONV_PARAMS = (
    "window_strides",
    "padding",
    "lhs_dilation",
    "rhs_dilation",
    "dimension_numbers",
    "feature_group_count",
    "batch_group_count",
    "precision",
    "preferred_element_type",
)


def _conv(invals, params):
    if any(v is not None for k, v in params.items() if k not in _CONV_PARAMS):
        return None  # an explicit out_sharding (or a parameter of a later JAX): left as it is
    lhs, rhs = invals
    return conv_general_dilated(lhs, rhs, **{k: params[k] for k in _CONV_PARAMS if k in params})


_REWRITES = {"reduce_window_max": _reduce_window_max, "conv_general_dilated": _conv}
_INLINE = ("jit", "pjit")


def _eval(jaxpr, consts, *args):
    env = {}

    def read(v):
        return v.val if isinstance(v, Literal) else env[v]

    for v, c in zip(jaxpr.constvars, consts, strict=True):
        env[v] = c
    for v, a in zip(jaxpr.invars, args, strict=True):
        env[v] = a
    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        name = eqn.primitive.name
        out = None
        if name in _REWRITES:
            out = _REWRITES[name](invals, eqn.params)
        elif name in _INLINE and isinstance(eqn.params.get("jaxpr"), ClosedJaxpr):
            inner = eqn.params["jaxpr"]
            out = _eval(inner.jaxpr, inner.consts, *invals)
        if out is None:
            params = eqn.primitive.get_bind_params(eqn.params)
            subfuns = []
            if isinstance(params, tuple):  # (subfuns, params) in older JAX
                subfuns, params = params
            ctx = getattr(getattr(eqn, "ctx", None), "manager", contextlib.nullcontext())
            with ctx:
                out = eqn.primitive.bind(*subfuns, *invals, **params)
        if not eqn.primitive.multiple_results:
            out = [out]
        for v, o in zip(eqn.outvars, out, strict=True):
            if not isinstance(v, DropVar):
                env[v] = o
    return [read(v) for v in jaxpr.outvars]


def fast_logit_fn(logit_fn: LogitFn) -> LogitFn:
    """``logit_fn`` with its convolutions and tiling max-pools in jaxgrad's fast forms.

    Args:
      logit_fn: any ``logit_fn(params, x) -> [B, K]`` (a Linen or NNX module's apply, a
        plain function, jitted or not).

    Returns:
      A ``logit_fn`` with the same values and derivatives (of every order, in ``x`` and in
      ``params``) that every attribution method, trace estimator and training step takes
      in place of the original. On XLA's CPU backend the MNIST CNN built from stock Flax
      layers runs Integrated Gradients at the speed of jaxgrad's own layers
      (``benchmarks/attribution.py``, the ``user_cnn`` rows). It is meant to run under
      ``jit`` (as every method does): the user's own ``jit`` boundaries inside ``logit_fn``
      are inlined. Layer taps (Grad-CAM, FullGrad) are not carried over: give those methods
      the original, which refuse this plain function by name.

    Example:
      >>> import flax.linen as nn, jax, jax.numpy as jnp
      >>> from jaxgrad.models import fast_logit_fn
      >>> class Net(nn.Module):
      ...     @nn.compact
      ...     def __call__(self, x):
      ...         x = nn.max_pool(nn.relu(nn.Conv(4, (3, 3))(x)), (2, 2), (2, 2))
      ...         return nn.Dense(3)(x.reshape(len(x), -1))
      >>> net = Net()
      >>> x = jnp.ones((2, 8, 8, 1))
      >>> v = net.init(jax.random.key(0), x)
      >>> fast = fast_logit_fn(net.apply)
      >>> bool(jnp.allclose(fast(v, x), net.apply(v, x)))
      True
    """
    if not callable(logit_fn):
        raise TypeError(f"logit_fn must be callable, got {type(logit_fn).__name__}")

    def fast(params, x):
        closed, shape = jax.make_jaxpr(logit_fn, return_shape=True)(params, x)
        outs = _eval(closed.jaxpr, closed.consts, *jax.tree.leaves((params, x)))
        return jax.tree.unflatten(jax.tree.structure(shape), outs)

    fast.__name__ = f"fast_logit_fn({getattr(logit_fn, '__name__', type(logit_fn).__name__)})"
    fast.__doc__ = logit_fn.__doc__
    return fast
