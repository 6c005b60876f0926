"""What a compiled program costs, before running it: FLOPs and per-device memory.

``compiled_cost(jax.jit(f), *abstract_args)`` lowers and compiles ``f`` ahead of time for
abstract inputs (``jax.ShapeDtypeStruct``, no data, nothing executed) and reads XLA's own
analyses of the compiled program: ``cost_analysis`` (FLOPs, bytes accessed) and
``memory_analysis`` (argument, output and temporary buffers on one device). Used by the
experiments' ``--dry_run`` to size a full run on the devices at hand, and by users to check
that a step fits an accelerator before renting it.

Two properties of XLA's analyses a reader must know:

- For a program sharded over several devices, the figures are those of the program **one
  device** runs (XLA compiles one SPMD program per device); the whole step's FLOPs are
  ``flops * num_devices``.
- A ``while`` loop's body is counted **once**, whatever its trip count (``lax.fori_loop``,
  ``lax.scan``, ``lax.map`` with a ``batch_size``). :func:`compiled_cost` reports the loops
  it finds with their trip counts, and ``flops_exact`` is False when there is one; compile
  one iteration and multiply where exact figures matter. (The loops XLA's CPU backend
  emits for random bits are counted apart: they do integer work only.)
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import optax

from jaxgrad._validation import checked, linen_module, optax_transform, positive_ints
from jaxgrad.training.state import TrainState, create_train_state

_TRIP_COUNT = re.compile(r'known_trip_count"?\s*[:=]\s*\{\s*"?n"?\s*[:=]\s*"?(\d+)')
_OP_NAME = re.compile(r'op_name="([^"]*)"')
# While loops that XLA's CPU backend emits for random bits (threefry rounds): integer work,
# no model FLOPs; GPUs and TPUs generate the bits without a loop.
_RNG_LOOP = re.compile(
    r"jit\((_threefry\w*|_random_bits|_uniform|_normal|_normal_real|_randint|_bernoulli"
    r"|_truncated_normal|_gamma\w*|_permutation|_shuffle)\)"
)


def _loops(hlo: str) -> tuple[list[int | None], int]:
    """Trip counts of the program's while loops (None: unknown), and how many generate random bits."""
    loops, rng = [], 0
    for line in hlo.splitlines():
        if " while(" not in line:
            continue
        name = _OP_NAME.search(line)
        if name and _RNG_LOOP.search(name.group(1).rsplit("/", 1)[0]):
            rng += 1
            continue
        trip = _TRIP_COUNT.search(line)
        loops.append(int(trip.group(1)) if trip else None)
    return loops, rng


def compiled_cost(fn: Callable, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Compiles ``fn`` (a ``jax.jit`` function) for ``args`` and returns its costs.

    Args:
      fn: a jitted function (anything with ``.lower``).
      *args, **kwargs: its arguments; arrays may be ``jax.ShapeDtypeStruct`` (with a
        ``sharding`` where ``fn`` has no ``in_shardings``), static arguments as usual.

    Returns:
      ``{"flops", "bytes_accessed", "memory": {"argument_bytes", "output_bytes",
      "temp_bytes", "alias_bytes", "generated_code_bytes", "peak_bytes"}, "loops",
      "rng_loops", "flops_exact", "compile_seconds"}``: FLOPs and bytes of one call of the
      per-device program; ``peak_bytes`` = arguments + outputs - aliased + temporaries, an
      upper bound of what one device holds during the call; ``loops`` the trip counts (None
      if unknown) of the program's while loops, whose bodies are counted once
      (``flops_exact`` is False then); ``rng_loops`` the loops XLA's CPU backend emits to
      generate random bits (integer work, left out of ``loops``).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> x = jax.ShapeDtypeStruct((64, 128), jnp.float32)
      >>> cost = compiled_cost(jax.jit(lambda a: a @ a.T), x)
      >>> int(cost["flops"]) == 2 * 64 * 64 * 128
      True
    """
    if not hasattr(fn, "lower"):
        raise TypeError(f"fn must be a jax.jit function (with .lower), got {type(fn).__name__}")
    t0 = time.perf_counter()
    compiled = fn.lower(*args, **kwargs).compile()
    seconds = time.perf_counter() - t0
    analysis = compiled.cost_analysis()
    if isinstance(analysis, list | tuple):  # older jax: one dict per computation
        analysis = analysis[0] if analysis else {}
    analysis = analysis or {}
    mem = compiled.memory_analysis()
    memory = {}
    if mem is not None:
        memory = {
            "argument_bytes": int(mem.argument_size_in_bytes),
            "output_bytes": int(mem.output_size_in_bytes),
            "temp_bytes": int(mem.temp_size_in_bytes),
            "alias_bytes": int(mem.alias_size_in_bytes),
            "generated_code_bytes": int(mem.generated_code_size_in_bytes),
        }
        memory["peak_bytes"] = (
            memory["argument_bytes"]
            + memory["output_bytes"]
            - memory["alias_bytes"]
            + memory["temp_bytes"]
        )
    loops, rng_loops = _loops(compiled.as_text() or "")
    return {
        "flops": float(analysis.get("flops", np.nan)),
        "bytes_accessed": float(analysis.get("bytes accessed", np.nan)),
        "memory": memory,
        "loops": loops,
        "rng_loops": rng_loops,
        "flops_exact": not loops,
        "compile_seconds": seconds,
    }


@checked(model=linen_module, tx=optax_transform, sample_shape=positive_ints)
def abstract_train_state(
    model, tx: optax.GradientTransformation, sample_shape: tuple[int, ...], dtype=np.float32
) -> TrainState:
    """The :class:`TrainState` that ``create_train_state`` would build, as shapes only.

    Nothing is initialised or allocated (``jax.eval_shape``); pass it to
    :func:`compiled_cost` with a train step from ``make_train_step``.

    Args:
      model: a Linen module taking ``(x, train)``.
      tx: the optimizer.
      sample_shape: one input's shape with a batch axis, e.g. ``(1, 32, 32, 3)``.
      dtype: the input's dtype.
    """
    x = jax.ShapeDtypeStruct(tuple(sample_shape), dtype)
    return jax.eval_shape(lambda k, z: create_train_state(model, tx, k, z), jax.random.key(0), x)
