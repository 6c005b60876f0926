"""Orbax checkpoints of a train state: every N steps, keep the last K, resume exactly.

A checkpoint is written atomically (orbax writes to a temporary folder and renames it when
complete; on an object store it marks completion with a ``commit_success.txt``), so a
process killed mid-save leaves the previous checkpoint usable. Once a save
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
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from jaxgrad._validation import POSITIVE, POSITIVE_INT, checked
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

    @checked(save_every=POSITIVE_INT, keep=POSITIVE_INT, stale_after=POSITIVE)
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
        self._pending: int | None = None  # the step of a save not yet known to have succeeded
        self._failed = False  # a failed save was raised: close() does not raise it again
        if lock:
            self._acquire(stale_after)

    def _lock_path(self):
        return self.directory / "LOCK"

    def _acquire(self, stale_after: float) -> None:
        """Takes ``LOCK`` on process 0, refusing a live holder; every process agrees.

        Locally the file is created exclusively (``O_EXCL``), so two runs starting at once
        cannot both take it; on an object store (no exclusive create) it is written and
        read back. The other processes learn process 0's answer and raise with it.
        """
        error = ""
        if jax.process_index() == 0:
            try:
                self._take(stale_after)
            except RuntimeError as e:
                error = str(e)
        error = _from_process_0(error)
        if error:
            raise RuntimeError(error)

    def _take(self, stale_after: float) -> None:
        path, host = self._lock_path(), socket.gethostname()
        token = uuid.uuid4().hex
        if self._create_exclusive(path, token):
            self._token = token
            return
        try:
            holder = json.loads(path.read_text())
        except (OSError, ValueError):
            holder = {}
        alive = True
        if holder.get("host") == host:
            if holder.get("boot") and holder.get("boot") != _boot_id():
                alive = False  # a restarted machine or container: its pids mean nothing now
            else:
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
            stacklevel=4,
        )
        self._token = token
        self._touch(force=True)

    def _create_exclusive(self, path, token: str) -> bool:
        """Creates ``path`` holding this lock's record only if it does not exist."""
        record = json.dumps(self._record(token))
        if "://" in str(path):  # object stores: write, then read back who won
            if path.exists():
                return False
            path.write_text(record)
            try:
                return json.loads(path.read_text()).get("token") == token
            except (OSError, ValueError):
                return False
        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(str(path), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(record)
        return True

    def _record(self, token: str) -> dict:
        return {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "boot": _boot_id(),
            "time": time.time(),
            "token": token,
        }

    def _touch(self, force: bool = False) -> None:
        """Refreshes the lock's time, unless another run has taken it over meanwhile."""
        if self._token is None:
            return
        path = self._lock_path()
        if not force:
            try:
                if json.loads(path.read_text()).get("token") != self._token:
                    warnings.warn(
                        f"the lock of {str(self.directory)!r} was taken over", stacklevel=3
                    )
                    self._token = None
                    return
            except (OSError, ValueError):
                pass
        path.write_text(json.dumps(self._record(self._token)))

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
        due (which waits for it, as orbax would), or at :meth:`poll`, :meth:`wait` or
        :meth:`close`. A save that cannot be written raises :class:`CheckpointError`: the
        previous save's failure, here or at :meth:`poll`; a lock that cannot be refreshed
        (a read-only folder), here, on every process.
        """
        if force or self.due(step):
            self._wait_for(self._pending)
            self._hash_completed()
            error = ""
            try:
                self._touch()
            except OSError as e:
                error = f"{type(e).__name__}: {e}"
            error = _from_process_0(error)  # process 0 holds the lock; all agree
            if error:
                self._failed = True
                raise CheckpointError(step, self.directory, error)
        saved = self._manager.save(int(step), args=ocp.args.StandardSave(state), force=force)
        if saved:
            self._pending, self._failed = int(step), False  # a later failure is a new one
        return saved

    def _wait_for(self, step: int | None) -> None:
        """Waits for the save in flight; its failure raises :class:`CheckpointError`.

        After a failure orbax's list of steps can be stale (it dropped the steps the failed
        save would have replaced): it is read again from the folder.
        """
        try:
            self._manager.wait_until_finished()
        except Exception as e:
            self._failed = True
            self._manager.reload()
            raise CheckpointError(step, self.directory, f"{type(e).__name__}: {e}") from e
        finally:
            self._pending = None

    def poll(self) -> None:
        """Raises :class:`CheckpointError` now if an asynchronous save has failed.

        A full disk or a read-only mount fails orbax's background write, which orbax reports
        only when the next save (``save_every`` steps later) or ``close`` waits for it.
        ``poll`` waits for a save only once orbax says it is no longer in progress (so it
        never blocks training), then hashes it or raises its error; it costs one flag when
        no save is pending. :func:`fit` calls it after every step with one process. With
        several, every process must call it at the same steps (``fit``: its log rows): they
        always exchange their outcome, and one process's failure raises on all. (With
        several processes orbax itself waits at a barrier after a failed write, up to its
        ``AsyncOptions.timeout_secs``, before the failure reaches any process.)
        """
        error, step = "", self._pending
        try:
            if step is not None and not self._manager.is_saving_in_progress():
                self._wait_for(step)  # finished: returns at once, or raises its error
                self._hash_completed()
        except CheckpointError as e:
            error = e.reason
        except OSError as e:  # the hash file could not be written
            error, self._failed = f"{type(e).__name__}: {e}", True
        if jax.process_count() > 1:  # every process reaches this, error or not
            flags = np.asarray(
                multihost_utils.process_allgather(
                    np.asarray([bool(error), -1 if step is None else step])
                )
            ).reshape(-1, 2)
            failed = np.flatnonzero(flags[:, 0])
            if failed.size and not error:
                i = int(failed[0])
                error = f"process {i} failed to write its part (see its log)"
                step = int(flags[i, 1])
                self._failed = True
        if error:
            raise CheckpointError(step, self.directory, error)

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
                    h = hashlib.sha256()
                    with entry.open("rb") as f:
                        for block in iter(lambda f=f: f.read(1 << 20), b""):
                            h.update(block)
                    out[rel] = h.hexdigest()
        return dict(sorted(out.items()))

    def _hash_completed(self) -> None:
        """Writes the hash file of every complete checkpoint lacking one; drops stale ones.

        Called only when no save is in flight.
        """
        if jax.process_index() != 0:
            return
        steps = set(self._manager.all_steps())
        for step in steps:
            path = self._hash_file(step)
            # A step orbax lists without its folder is a failed save (CheckpointError).
            if not path.exists() and (self.directory / str(step)).exists():
                partial = self.directory / f".{path.name}.partial"
                partial.write_text(json.dumps(self._digest(step), indent=0))
                partial.rename(path)
        for f in self.directory.glob("*.sha256.json"):
            name = f.name[: -len(".sha256.json")]
            # Only when the checkpoint is gone from disk: orbax's list can lag behind it.
            if name.isdigit() and int(name) not in steps and not (self.directory / name).exists():
                f.unlink()

    def verify(self, step: int) -> list[str]:
        """The files of checkpoint ``step`` that differ from their hashes.

        Missing, changed or unexpected files; [] when it matches, or when it has no hash
        file yet.
        """
        path = self._hash_file(step)
        if not path.exists():
            return []
        try:
            expected = json.loads(path.read_text())
        except (OSError, ValueError):
            warnings.warn(f"{str(path)!r} is unreadable: step {step} is not verified", stacklevel=3)
            return []
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

        A checkpoint whose files fail their hashes is reported (a ``UserWarning`` naming
        its step and files) and the one before it is tried; a writer (``lock=True``) also
        moves it aside to ``<step>.corrupt`` (kept for inspection, out of orbax's sight, so
        the resumed run saves that step again). A checkpoint that has no hash file yet (a
        process killed right after the save) and fails to restore is skipped the same way
        without being moved. One whose hashes pass but that fails to restore (``target``
        of another structure, a transient storage error) raises: it is not corrupt. With
        several processes, process 0 checks the hashes and every process follows it.

        Raises:
          RuntimeError: checkpoints exist but none restores.
        """
        steps = sorted(self.all_steps(), reverse=True)
        failures = []
        for step in steps:
            bad = self.verify(step) if jax.process_index() == 0 else []
            bad = _from_process_0(json.dumps(bad))
            bad = json.loads(bad)
            if not bad:
                hashed = _from_process_0("1" if self._hash_file(step).exists() else "")
                try:
                    return self.restore(step, target)
                except Exception as e:
                    if hashed:
                        raise
                    failures.append(
                        f"step {step} (not yet hashed): {type(e).__name__}: {str(e)[:300]}"
                    )
                    warnings.warn(
                        f"checkpoint {failures[-1]} in {self.directory}; trying the one before it",
                        stacklevel=2,
                    )
                    continue
            failures.append(f"step {step}: files differ from their hashes: {bad[:5]}")
            where = ""
            if self._locked_here():  # only a writer moves checkpoints (every process agrees)
                where = f"; moved to {self._quarantine(step).name}"
            warnings.warn(
                f"checkpoint {failures[-1]} in {self.directory}{where}; trying the one before it",
                stacklevel=2,
            )
        if failures:
            raise RuntimeError(
                f"no checkpoint in {self.directory} restores: " + "; ".join(failures)
            )
        return None

    def _locked_here(self) -> bool:
        """Whether process 0 of this run holds the lock (every process gets its answer)."""
        return bool(_from_process_0("1" if self._token is not None else ""))

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
        self._wait_for(self._pending)
        self._hash_completed()

    def close(self) -> None:
        """Waits for pending saves, hashes them, releases the manager and the lock.

        A failure already raised (:class:`CheckpointError`, by :meth:`save`, :meth:`poll`
        or :meth:`wait`) is not raised again, so the first error is the one a caller sees;
        the manager and the lock are released in any case.
        """
        raised_before = self._failed
        try:
            self._wait_for(self._pending)
            self._hash_completed()
        except (CheckpointError, OSError):
            if not raised_before:
                raise
        finally:
            try:
                self._manager.close()
            finally:
                self._release()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class CheckpointError(RuntimeError):
    """A checkpoint could not be written (full disk, read-only or vanished folder...).

    Attributes:
      step: the step whose save failed (None if unknown).
      directory: the checkpoint folder.
      reason: the underlying error, as text.
    """

    def __init__(self, step: int | None, directory, reason: str):
        self.step, self.directory, self.reason = step, directory, reason
        what = "a checkpoint" if step is None else f"the checkpoint of step {step}"
        super().__init__(
            f"saving {what} into {str(directory)!r} failed: {reason}. The checkpoints "
            "saved before it are kept; once the folder is writable again (space, "
            "permissions, a timed-out host), rerun the same command to resume from the newest"
        )


def _from_process_0(text: str) -> str:
    """Process 0's ``text`` on every process (itself with one process)."""
    if jax.process_count() == 1:
        return text
    data = np.zeros(4096, np.uint8)
    raw = text.encode()[:4096]
    data[: len(raw)] = np.frombuffer(raw, np.uint8)
    out = np.asarray(multihost_utils.broadcast_one_to_all(data))
    return bytes(out[out != 0].tolist()).decode(errors="replace")


def _boot_id() -> str:
    """This machine's boot id (Linux), which a restarted container does not share."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""
