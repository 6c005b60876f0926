"""Paths that may be local or remote (``gs://``, ``s3://``...), through ``etils.epath``.

Public so that code around jaxgrad (the experiments, a user's script) names files the way
jaxgrad's writers do.

A TPU VM run writes its checkpoints, metrics, figures and report to a bucket; everything in
jaxgrad that writes files takes a path through :func:`as_path`, so a ``gs://`` workdir
reaches epath (and, for checkpoints, orbax's tensorstore) instead of becoming the local
folder ``./gs:/``. Object stores cannot append: :func:`is_remote` tells writers to rewrite
a file instead.
"""

from __future__ import annotations

import os

from etils import epath

REMOTE_PREFIXES = ("gs://", "s3://", "az://", "hf://")


def is_remote(path: str | os.PathLike) -> bool:
    """Whether ``path`` names an object store (``gs://``, ``s3://``, ``az://``, ``hf://``)."""
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__} {path!r}")
    return os.fspath(path).startswith(REMOTE_PREFIXES)


def as_path(path: str | os.PathLike) -> epath.Path:
    """``path`` as an ``epath.Path``: remote paths as they are, local ones made absolute."""
    if is_remote(path):
        return epath.Path(path)
    return epath.Path(os.path.abspath(os.fspath(path)))


__all__ = [
    "as_path",
    "is_remote",
]
