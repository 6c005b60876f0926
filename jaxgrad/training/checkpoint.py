"""Orbax checkpoints of a train state: every N steps, keep the last K, resume exactly.

A checkpoint is written atomically (orbax writes to a temporary folder and renames it when
complete), so a process killed mid-save leaves the previous checkpoint usable. Together with
batches that are a pure function of the step (:mod:`jaxgrad.data.iterators`) and per-step
keys ``fold_in(key, step)``, restoring the latest state and continuing reproduces the
uninterrupted run bit for bit on the same device. In a multi-host run every process calls
these functions; orbax coordinates and the primary host writes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from jaxgrad.paths import as_path


class Checkpointer:
    """Saves and restores train states in ``directory``.

    Args:
      directory: folder of the checkpoints (created if missing); local, or any path
        ``etils.epath`` understands (``gs://bucket/run/checkpoints``).
      save_every: save when ``step % save_every == 0`` (and whenever ``force=True``).
      keep: how many of the most recent checkpoints to keep.
      async_save: write in a background thread while training goes on.

    Example (with ``state`` a train state)::

      ckpt = Checkpointer("/tmp/run/checkpoints", save_every=100, keep=3)
      state = ckpt.restore_latest(state) or state
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        save_every: int = 1000,
        keep: int = 3,
        async_save: bool = True,
    ):
        if save_every < 1:
            raise ValueError(f"save_every must be >= 1, got {save_every}")
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.directory = as_path(directory)
        local = "://" not in str(self.directory)  # an object store has no files-as-folders
        if local and self.directory.exists() and not self.directory.is_dir():
            raise ValueError(
                f"checkpoint_dir {str(self.directory)!r} is a file, not a folder: choose "
                "another path or remove the file"
            )
        self.save_every = save_every
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            save_interval_steps=save_every,
            create=True,
            enable_async_checkpointing=async_save,
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def save(self, step: int, state: Any, *, force: bool = False) -> bool:
        """Saves ``state`` as step ``step`` if it is due (or ``force``); returns whether it did."""
        return self._manager.save(int(step), args=ocp.args.StandardSave(state), force=force)

    def due(self, step: int) -> bool:
        """Whether :meth:`save` would write ``step`` without ``force``."""
        return bool(self._manager.should_save(int(step)))

    def latest_step(self) -> int | None:
        """The step of the newest complete checkpoint, or None."""
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        """Steps of the complete checkpoints on disk."""
        return list(self._manager.all_steps())

    def restore(self, step: int, target: Any) -> Any:
        """Restores step ``step`` with the structure, dtypes and shardings of ``target``."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        return self._manager.restore(int(step), args=ocp.args.StandardRestore(abstract))

    def restore_latest(self, target: Any) -> Any | None:
        """Restores the newest checkpoint like ``target``, or returns None if there is none."""
        step = self.latest_step()
        return None if step is None else self.restore(step, target)

    def wait(self) -> None:
        """Blocks until any asynchronous save has finished."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Waits for pending saves and releases the manager."""
        self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
