"""Orbax checkpoints of a train state: every N steps, keep the last K, resume exactly.

A checkpoint is written atomically (orbax writes to a temporary folder and renames it when
complete), so a process killed mid-save leaves the previous checkpoint usable. Once a save
is complete its files are hashed (SHA-256) into ``<step>.sha256.json`` beside it; restoring
checks the newest checkpoint against its hashes, and one that fails them (a flipped byte, a
truncated or garbled file) or fails to restore is reported by step and skipped for the one
before it. Together with
batches that are a pure function of the step (:mod:`jaxgrad.data.iterators`) and per-step
keys ``fold_in(key, step)``, restoring the latest state and continuing reproduces the
uninterrupted run bit for bit on the same device. In a multi-host run every process calls
these functions; orbax coordinates and the primary host writes.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from jaxgrad.paths import as_path


class Checkpointer:
    """Saves and restores train states in ``directory``.

    Args:
      directory: folder of the checkpoints (created if missing); local, or any path
        ``etils.epath`` understands (``gs://bucket/run/checkpoints``).
      save_every: save when ``step % save_every == 0`` (and whenever ``force=True``).
      keep: how many of the most recent checkpoints to keep.
      async_save: write in a background thread while training goes on.
      lock: hold ``<directory>/LOCK`` until :meth:`close`, so that a second writer (another
        run, or a second :func:`jaxgrad.training.fit` on the same folder) is refused at once
        instead of interleaving checkpoints. A lock left by a killed process is taken over
        (with a warning) when its process is gone (same host) or it has not been refreshed
        (every save) for ``stale_after`` seconds (another host). Readers need no lock.
      stale_after: see ``lock``.

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
        lock: bool = False,
        stale_after: float = 900.0,
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
        self._token = None
        if lock:
            self._acquire(stale_after)

    def _lock_path(self):
        return self.directory / "LOCK"

    def _acquire(self, stale_after: float) -> None:
        """Takes ``LOCK`` (process 0), refusing a live holder; see the class's ``lock``."""
        if jax.process_index() != 0:
            return
        path, host = self._lock_path(), socket.gethostname()
        if path.exists():
            try:
                holder = json.loads(path.read_text())
            except (OSError, ValueError):
                holder = {}
            alive = True
            if holder.get("host") == host:
                try:
                    os.kill(int(holder.get("pid", -1)), 0)
                except (ProcessLookupError, ValueError, OverflowError):
                    alive = False
                except PermissionError:
                    pass
            else:
                alive = time.time() - float(holder.get("time", 0)) < stale_after
            if alive:
                raise RuntimeError(
                    f"checkpoint_dir {str(self.directory)!r} is in use by process "
                    f"{holder.get('pid')} on {holder.get('host')} (lock refreshed "
                    f"{time.time() - float(holder.get('time', 0)):.0f} s ago): two writers "
                    "would interleave their checkpoints. Wait for it, use another folder, or "
                    f"delete {str(path)!r} if that run is gone"
                )
            warnings.warn(
                f"taking over the lock of {str(self.directory)!r} left by process "
                f"{holder.get('pid')} on {holder.get('host')}, which is gone",
                stacklevel=3,
            )
        self._token = uuid.uuid4().hex
        self._touch()

    def _touch(self) -> None:
        if self._token is not None:
            record = {"pid": os.getpid(), "host": socket.gethostname(), "time": time.time()}
            self._lock_path().write_text(json.dumps({**record, "token": self._token}))

    def _release(self) -> None:
        if self._token is None:
            return
        path = self._lock_path()
        try:
            if json.loads(path.read_text()).get("token") == self._token:
                path.unlink()
        except (OSError, ValueError):
            pass
        self._token = None

    def save(self, step: int, state: Any, *, force: bool = False) -> bool:
        """Saves ``state`` as step ``step`` if it is due (or ``force``); returns whether it did.

        An asynchronous save is hashed when it is complete: before the next save that is
        due (which waits for it, as orbax would), or at :meth:`wait` / :meth:`close`.
        """
        if force or self.due(step):
            self._manager.wait_until_finished()
            self._hash_completed()
            self._touch()
        return self._manager.save(int(step), args=ocp.args.StandardSave(state), force=force)

    def _hash_file(self, step: int):
        return self.directory / f"{int(step)}.sha256.json"

    def _digest(self, step: int) -> dict[str, str]:
        """SHA-256 of every file of a step's folder, by path relative to it."""
        root = self.directory / str(int(step))
        out, stack = {}, [root]
        while stack:
            folder = stack.pop()
            for entry in folder.iterdir():
                if entry.is_dir():
                    stack.append(entry)
                else:
                    rel = str(entry)[len(str(root)) + 1 :]
                    out[rel] = hashlib.sha256(entry.read_bytes()).hexdigest()
        return dict(sorted(out.items()))

    def _hash_completed(self) -> None:
        """Writes the hash file of every complete checkpoint lacking one; drops stale ones.

        Called only when no save is in flight.
        """
        if jax.process_index() != 0:
            return
        steps = set(self._manager.all_steps())
        for step in steps:
            if not self._hash_file(step).exists():
                self._hash_file(step).write_text(json.dumps(self._digest(step), indent=0))
        for f in self.directory.glob("*.sha256.json"):
            name = f.name[: -len(".sha256.json")]
            if name.isdigit() and int(name) not in steps:
                f.unlink()

    def verify(self, step: int) -> list[str]:
        """The files of checkpoint ``step`` that differ from their hashes.

        Missing, changed or unexpected files; [] when it matches, or when it has no hash
        file yet.
        """
        path = self._hash_file(step)
        if not path.exists():
            return []
        expected = json.loads(path.read_text())
        actual = self._digest(step)
        return sorted(
            k for k in expected.keys() | actual.keys() if expected.get(k) != actual.get(k)
        )

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
        """Restores the newest good checkpoint like ``target``, or returns None if there is none.

        A checkpoint whose files fail their hashes, or that fails to restore, is reported
        (a ``UserWarning`` naming its step and what failed), moved aside to
        ``<step>.corrupt`` (kept for inspection, out of orbax's sight, so the resumed run
        saves that step again) and the one before it is tried.

        Raises:
          RuntimeError: checkpoints exist but none restores.
        """
        steps = sorted(self.all_steps(), reverse=True)
        failures = []
        for step in steps:
            bad = self.verify(step)
            if bad:
                failures.append(f"step {step}: files differ from their hashes: {bad[:5]}")
            else:
                try:
                    return self.restore(step, target)
                except Exception as e:  # truncated or garbled files orbax cannot read
                    failures.append(f"step {step}: {type(e).__name__}: {str(e)[:300]}")
            aside = self._quarantine(step)
            warnings.warn(
                f"checkpoint {failures[-1]} in {self.directory}; moved to {aside.name}, "
                "trying the one before it",
                stacklevel=2,
            )
        if failures:
            raise RuntimeError(
                f"no checkpoint in {self.directory} restores: " + "; ".join(failures)
            )
        return None

    def _quarantine(self, step: int):
        """Renames a bad checkpoint (and its hash file) to ``<step>.corrupt[.n]``."""
        aside = self.directory / f"{int(step)}.corrupt"
        n = 1
        while aside.exists():
            aside, n = self.directory / f"{int(step)}.corrupt.{n}", n + 1
        if jax.process_index() == 0:
            (self.directory / str(int(step))).rename(aside)
            if self._hash_file(step).exists():
                self._hash_file(step).rename(self.directory / f"{aside.name}.sha256.json")
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"jaxgrad checkpoint {int(step)} moved aside")
        self._manager.reload()
        return aside

    def wait(self) -> None:
        """Blocks until any asynchronous save has finished (and hashes it)."""
        self._manager.wait_until_finished()
        self._hash_completed()

    def close(self) -> None:
        """Waits for pending saves, hashes them, releases the manager and the lock."""
        try:
            self._manager.wait_until_finished()
            self._hash_completed()
            self._manager.close()
        finally:
            self._release()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
