"""JSON-lines metrics and progress lines with rate and ETA.

Only process 0 writes, so a multi-host run produces one log. Metrics are read back from the
device only when they are logged (every ``log_every`` steps), never once per step.
"""

from __future__ import annotations

import datetime
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import jax
import numpy as np

from jaxgrad._validation import NONNEGATIVE, NONNEGATIVE_INT, checked, integer
from jaxgrad.paths import as_path, is_remote


def _to_python(value: Any) -> Any:
    if isinstance(value, (np.ndarray, jax.Array)):
        value = np.asarray(value)
        return value.item() if value.ndim == 0 else value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


class MetricWriter:
    """Appends one JSON object per call to ``path`` (on process 0 only).

    Appending means a resumed run continues the same file; rows carry their ``step``, so a
    reader can keep the last row per step. ``path`` may be remote (``gs://...``, through
    ``etils.epath``): object stores cannot append, so the file is rewritten whole at each
    row (metrics files are small). With ``tensorboard_dir``, every row also goes to
    TensorBoard event files there (``tensorboardX``, imported when asked for), one scalar
    per metric under ``<split>/<name>``.
    """

    def __init__(self, path: str | Path | None, *, tensorboard_dir: str | Path | None = None):
        self.path = None if path is None else as_path(path)
        if self.path is not None and self.path.is_dir():
            raise IsADirectoryError(
                f"path {str(self.path)!r} is a folder: give a file path, e.g. metrics.jsonl"
            )
        self._enabled = jax.process_index() == 0
        self._lines: list[str] | None = None
        if self._enabled and self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if is_remote(self.path):
                self._lines = self.path.read_text().splitlines() if self.path.exists() else []
        self._tb = None
        if self._enabled and tensorboard_dir is not None:
            try:
                from tensorboardX import SummaryWriter
            except ImportError as e:  # pragma: no cover - depends on the environment
                raise ImportError(
                    "tensorboard_dir needs tensorboardX: pip install 'jaxgrad[experiments]'"
                ) from e
            self._tb = SummaryWriter(str(as_path(tensorboard_dir)), flush_secs=30)

    def write(self, step: int, metrics: dict[str, Any], **extra: Any) -> None:
        """Writes ``{"step": step, **metrics, **extra}`` as one line (and to TensorBoard)."""
        if not self._enabled:
            return
        row = {"step": int(step), **{k: _to_python(v) for k, v in {**metrics, **extra}.items()}}
        if self._tb is not None:
            split = extra.get("split", "train")
            for k, v in row.items():
                if k != "step" and isinstance(v, int | float) and not isinstance(v, bool):
                    self._tb.add_scalar(f"{split}/{k}", v, int(step))
        if self.path is None:
            return
        # Strict JSON: a non-finite number is written as the string "NaN", "Infinity" or
        # "-Infinity" (read_metrics turns it back into a float).
        line = json.dumps({k: _strict(v) for k, v in row.items()}, allow_nan=False)
        if self._lines is None:
            with self.path.open("a") as f:
                f.write(line + "\n")
        else:
            self._lines.append(line)
            self.path.write_text("\n".join(self._lines) + "\n")

    def close(self) -> None:
        """Flushes and closes the TensorBoard writer, if any."""
        if self._tb is not None:
            self._tb.close()
            self._tb = None


_NON_FINITE = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}


def _strict(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return [_strict(v) for v in value]
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Reads a JSON-lines metrics file (local or remote) back as a list of dicts.

    The strings ``"NaN"``, ``"Infinity"`` and ``"-Infinity"`` that :class:`MetricWriter`
    writes for non-finite numbers come back as floats.
    """
    p = as_path(path)
    if not p.exists():
        raise FileNotFoundError(f"path {str(p)!r}: no metrics file there")
    try:
        with p.open() as f:
            rows = [json.loads(line) for line in f if line.strip()]
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"path {str(p)!r} is not a JSON-lines metrics file: {e}") from None
    return [{k: _loose(v) for k, v in r.items()} for r in rows]


def _loose(value: Any) -> Any:
    if isinstance(value, list):
        return [_loose(v) for v in value]
    if isinstance(value, dict):
        return {k: _loose(v) for k, v in value.items()}
    return _NON_FINITE.get(value, value) if isinstance(value, str) else value


class Progress:
    """Log lines ``name: step/total (pct) rate it/s [examples/s], elapsed, ETA, metrics``.

    Prints on process 0 only, at most every ``every_seconds`` (and at the last step), so it
    reads well in CI logs and terminals alike. With ``total=None`` (an iterable of unknown
    length) the lines give the count and the rate, without a percentage or an ETA.
    """

    @checked(
        total=integer(0, optional=True),
        start=NONNEGATIVE_INT,
        examples_per_step=integer(1, optional=True),
        every_seconds=NONNEGATIVE,
    )
    def __init__(
        self,
        total: int | None,
        *,
        start: int = 0,
        name: str = "train",
        unit: str = "step",
        examples_per_step: int | None = None,
        every_seconds: float = 5.0,
        stream: TextIO | None = None,
    ):
        self.total, self.start, self.name, self.unit = total, start, name, unit
        self.examples_per_step = examples_per_step
        self.every_seconds = every_seconds
        self.stream = stream or sys.stdout
        self._t0 = time.perf_counter()
        self._last = -float("inf")
        self._enabled = jax.process_index() == 0

    def update(
        self,
        step: int,
        metrics: dict[str, Any] | None = None,
        *,
        force: bool = False,
        note: str | None = None,
    ) -> None:
        """Reports that ``step`` units are done (absolute, counting from 0), with an optional note."""
        now = time.perf_counter()
        known = self.total is not None
        if not self._enabled or not (
            force or (known and step >= self.total) or now - self._last >= self.every_seconds
        ):
            return
        self._last = now
        elapsed = now - self._t0
        done = step - self.start
        rate = done / elapsed if elapsed > 0 else 0.0
        count = (
            f"{step}/{self.total} ({100.0 * step / max(self.total, 1):.0f}%)"
            if known
            else f"{step} {self.unit}{'es' if self.unit.endswith('ch') else 's'}"
        )
        parts = [
            f"{self.name}: {count}" + (f" {note}" if note else ""),
            f"{rate:.2f} {self.unit}/s",
        ]
        if self.examples_per_step:
            parts.append(f"{rate * self.examples_per_step:.0f} examples/s")
        parts.append(f"elapsed {_fmt(elapsed)}")
        if known:
            parts.append(f"ETA {_fmt((self.total - step) / rate if rate > 0 else float('nan'))}")
        if metrics:
            parts.append(" ".join(f"{k}={float(v):.4g}" for k, v in metrics.items()))
        print(", ".join(parts), file=self.stream, flush=True)


def _fmt(seconds: float) -> str:
    if not np.isfinite(seconds):
        return "?"
    return str(datetime.timedelta(seconds=round(seconds)))
