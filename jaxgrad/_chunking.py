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


def merged_map(make, evaluate, samples, chunk_size: int | None):
    """``evaluate`` of ``make(s)`` for every sample ``s``, the samples merged into the batch.

    ``make(sample) -> inputs`` builds one sample's batch (a pytree of ``[B, ...]`` arrays;
    vmapped over the samples); ``evaluate(inputs, copies) -> outputs`` is a per-example
    function of a batch (a model or an attribution method: examples independent, the
    model contract), called on ``copies`` samples' batches merged example-major along the
    batch axis, ``[B * copies, ...]`` (example ``b``'s copies side by side, so a batch
    sharded over devices stays sharded with no communication), with per-example arguments
    repeated to match by the caller (:func:`repeat_examples`). Returns ``outputs`` as
    ``[S, B, ...]``.

    One large batch is what XLA runs fastest: a ``vmap`` over the samples of a model's
    forward pass takes about twice as long on XLA's CPU backend (2.66 s against 1.24 s for
    100 x 64 MNIST CNN forward passes). With ``chunk_size`` the samples go ``chunk_size`` at
    a time through a ``lax.map`` (the last chunk padded with the first sample, dropped).
    """
    check_chunk_size(chunk_size)
    n = jax.tree.leaves(samples)[0].shape[0]

    def run(chunk):
        inputs = jax.vmap(make)(chunk)
        c, b = jax.tree.leaves(inputs)[0].shape[:2]
        flat = jax.tree.map(lambda a: jnp.swapaxes(a, 0, 1).reshape(b * c, *a.shape[2:]), inputs)
        out = evaluate(flat, c)
        return jax.tree.map(lambda o: jnp.swapaxes(o.reshape(b, c, *o.shape[1:]), 0, 1), out)

    if chunk_size is None or chunk_size >= n:
        return run(samples)
    n_chunks = -(-n // chunk_size)
    pad = n_chunks * chunk_size - n

    def split(a):
        if pad:
            a = jnp.concatenate([a, jnp.repeat(a[:1], pad, axis=0)], axis=0)
        return a.reshape(n_chunks, chunk_size, *a.shape[1:])

    out = jax.lax.map(run, jax.tree.map(split, samples))
    return jax.tree.map(lambda o: o.reshape(n_chunks * chunk_size, *o.shape[2:])[:n], out)


def repeat_examples(a, copies: int):
    """``a [B, ...]`` for :func:`merged_map`'s merged batch: each example ``copies`` times."""
    return jnp.repeat(a, copies, axis=0)
