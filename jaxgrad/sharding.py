"""Data parallelism with ``jax.sharding``: one mesh axis over every device of every host.

The modern form of ``pmap`` data parallelism: batches are sharded along the ``data`` axis,
parameters and optimizer state are replicated, and plain ``jax.jit`` with these shardings
lets XLA insert the gradient all-reduce. The same code runs on one CPU, on fake CPU devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=8``), a GPU, or a multi-host TPU pod,
where each process loads only its part of every global batch and
:func:`shard_batch` assembles the global array with
``jax.make_array_from_process_local_data``.

The mesh axis is ``AxisType.Auto`` (sharding propagated by the compiler): plain data
parallelism needs no explicit-sharding annotations, and ``jax.make_mesh`` would otherwise
default to ``Explicit``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from jaxgrad._validation import MESH, POSITIVE_INT, a_mesh, checked, integer

DATA_AXIS = "data"


@checked(num_processes=integer(1, optional=True), process_id=integer(0, optional=True))
def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    cpu_collectives: str | None = None,
    **kwargs: Any,
) -> bool:
    """Initialises multi-host JAX when there is more than one process; a no-op otherwise.

    On a TPU pod call it with no arguments (the cluster is detected). On CPUs, e.g. several
    processes on one machine, pass the coordinator, the process count and this process's
    id, and ``cpu_collectives="gloo"`` so cross-process collectives work. Values missing
    here are read from ``JAXGRAD_COORDINATOR``, ``JAXGRAD_NUM_PROCESSES`` and
    ``JAXGRAD_PROCESS_ID``.

    Must run before any other JAX call that touches devices.

    Returns:
      True if ``jax.distributed.initialize`` was called.
    """
    env = os.environ
    if num_processes is not None and process_id is not None and process_id >= num_processes:
        raise ValueError(
            f"process_id must lie in [0, num_processes) = [0, {num_processes}), got {process_id}"
        )
    coordinator_address = coordinator_address or env.get("JAXGRAD_COORDINATOR")
    if num_processes is None and "JAXGRAD_NUM_PROCESSES" in env:
        num_processes = int(env["JAXGRAD_NUM_PROCESSES"])
    if process_id is None and "JAXGRAD_PROCESS_ID" in env:
        process_id = int(env["JAXGRAD_PROCESS_ID"])
    if cpu_collectives:
        jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    explicit = coordinator_address is not None and (num_processes or 1) > 1
    on_tpu_pod = coordinator_address is None and _looks_like_tpu_pod()
    if not (explicit or on_tpu_pod):
        return False
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
        **kwargs,
    )
    return True


def _looks_like_tpu_pod() -> bool:
    """True on a multi-host Cloud TPU VM (its worker list names more than one host)."""
    hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
    return len([h for h in hosts.split(",") if h]) > 1


def data_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh with axis ``data`` over ``devices`` (default: every device of every process)."""
    devices = list(jax.devices() if devices is None else devices)
    if not devices or not all(isinstance(d, jax.Device) for d in devices):
        raise ValueError(f"devices must be a non-empty sequence of jax.Device, got {devices!r}")
    return jax.make_mesh(
        (len(devices),), (DATA_AXIS,), axis_types=(AxisType.Auto,), devices=devices
    )


@checked(batch_size=POSITIVE_INT, mesh=a_mesh(optional=True))
def global_batch_size(batch_size: int, mesh: Mesh | None) -> int:
    """``batch_size`` rounded up to a multiple of the mesh's device count (unchanged without one)."""
    n = 1 if mesh is None else mesh.devices.size
    return -(-batch_size // n) * n


@checked(mesh=MESH)
def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over ``data``, the rest replicated."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


@checked(mesh=MESH)
def replicated(mesh: Mesh) -> NamedSharding:
    """Fully replicated over the mesh."""
    return NamedSharding(mesh, PartitionSpec())


@checked(mesh=MESH)
def shard_batch(batch: Any, mesh: Mesh) -> Any:
    """Places a batch pytree on ``mesh``, split along its leading axis.

    With one process the arrays are the whole global batch. With several processes each
    passes its own part (``batch_size // process_count`` rows, e.g. from
    ``get_batch(..., process_index=jax.process_index(), process_count=jax.process_count())``)
    and the global array is assembled with ``jax.make_array_from_process_local_data``.

    Raises:
      ValueError: if the (global) batch size is not divisible by the number of devices.
    """
    sharding = batch_sharding(mesh)
    n_dev = mesh.devices.size

    def put(x):
        x = np.asarray(x)
        global_rows = x.shape[0] * jax.process_count()
        if global_rows % n_dev:
            raise ValueError(
                f"the global batch size {global_rows} must be divisible by the number of devices "
                f"{n_dev}: use a batch_size that is a multiple of {n_dev} (e.g. "
                f"{-(-global_rows // n_dev) * n_dev}; jaxgrad.sharding.global_batch_size "
                "rounds one up)"
            )
        if jax.process_count() == 1:
            return jax.device_put(x, sharding)
        return jax.make_array_from_process_local_data(sharding, x, (global_rows, *x.shape[1:]))

    return jax.tree.map(put, batch)


@checked(mesh=MESH)
def replicate(tree: Any, mesh: Mesh) -> Any:
    """Places every leaf of ``tree`` on every device of ``mesh`` (params, optimizer state, keys).

    Every process must pass the same values. With several processes the global arrays are
    built from each process's copy (``device_put`` cannot target other processes' devices).
    """
    sharding = replicated(mesh)
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)

    def put(x):
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            impl = jax.random.key_impl(x)
            data = put(jax.random.key_data(x))
            return jax.jit(
                lambda d: jax.random.wrap_key_data(d, impl=impl), out_shardings=sharding
            )(data)
        x = np.asarray(x)
        return jax.make_array_from_process_local_data(sharding, x, x.shape)

    return jax.tree.map(put, tree)


def to_host(tree: Any) -> Any:
    """Copies a pytree of replicated arrays to numpy, also in multi-process runs.

    ``jax.device_get`` refuses arrays that span devices of other processes; a replicated
    array's local copy holds the whole value, so that is read instead.
    """

    def get(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            if not x.is_fully_replicated:
                raise ValueError("to_host needs replicated arrays; gather sharded ones first")
            return np.asarray(x.addressable_data(0))
        return np.asarray(jax.device_get(x))

    return jax.tree.map(get, tree)


def is_main_process() -> bool:
    """True on process 0: the only one that writes files in a multi-host run."""
    return jax.process_index() == 0


__all__ = [
    "DATA_AXIS",
    "batch_sharding",
    "data_mesh",
    "global_batch_size",
    "initialize_distributed",
    "is_main_process",
    "replicate",
    "replicated",
    "shard_batch",
    "to_host",
]
