"""Mapping a function over a leading sample axis with bounded memory (a leaf module)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxgrad._validation import check_chunk_size


def chunked_vmap(fn, xs, chunk_size: int | None):
    """``vmap(fn)(xs)`` over the leading axis of ``xs``, ``chunk_size`` at a time when given.

    With ``chunk_size`` the samples are evaluated by ``lax.map(..., batch_size=chunk_size)``
    (vmapped chunks in a loop), so peak memory is that of one chunk, not of the whole axis.
    """
    check_chunk_size(chunk_size)
    if chunk_size is None:
        return jax.vmap(fn)(xs)
    return jax.lax.map(fn, xs, batch_size=chunk_size)


def chunked_sum(fn, xs, chunk_size: int | None):
    """``sum_i fn(xs[i])`` over the leading axis of ``xs`` (a pytree), in chunks.

    Without ``chunk_size`` every sample is evaluated at once (``vmap``) and summed. With it
    the samples go ``chunk_size`` at a time through a ``lax.scan`` that accumulates the sum,
    so peak memory is one chunk's, whatever the number of samples. The last chunk is padded
    by repeating the first sample with weight 0.
    """
    check_chunk_size(chunk_size)
    if chunk_size is None:
        return jax.tree.map(lambda o: o.sum(axis=0), jax.vmap(fn)(xs))
    n = jax.tree.leaves(xs)[0].shape[0]
    chunk = min(chunk_size, n)
    n_chunks = -(-n // chunk)
    pad = n_chunks * chunk - n

    def split(a):
        if pad:
            a = jnp.concatenate([a, jnp.repeat(a[:1], pad, axis=0)], axis=0)
        return a.reshape(n_chunks, chunk, *a.shape[1:])

    mask = (jnp.arange(n_chunks * chunk) < n).reshape(n_chunks, chunk) if pad else None
    xs_c = jax.tree.map(split, xs)
    out_shape = jax.eval_shape(fn, jax.tree.map(lambda a: a[0], xs))
    init = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), out_shape)

    def body(acc, inp):
        xc, mc = inp
        out = jax.vmap(fn)(xc)
        if mc is not None:
            out = jax.tree.map(
                lambda o: o * mc.reshape(-1, *([1] * (o.ndim - 1))).astype(o.dtype), out
            )
        return jax.tree.map(lambda a, o: a + o.sum(axis=0), acc, out), None

    acc, _ = jax.lax.scan(body, init, (xs_c, mask))
    return acc
