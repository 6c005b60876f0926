"""Attribution figures: signed maps, absolute maps and grids (matplotlib imported lazily).

Normalisation (documented because it changes what a reader sees): a map ``[H, W, C]`` is
first summed over channels (keeping the sign), then divided by the ``clip_percentile``-th
percentile of its absolute values and clipped to ``[-1, 1]``. Signed maps show positive
attribution in red and negative in blue on separate channels (Sundararajan & Taly ask that
the two signs never be merged); absolute maps show ``|a|`` in grey levels. Each panel can
carry the sum of the raw (unnormalised) attribution, which completeness-satisfying methods
tie to the change of the logit.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from jaxgrad._validation import FRACTION, checked, number
from jaxgrad.paths import as_path


@checked(clip_percentile=number(0, 100, low_open=True))
def normalize_signed(attribution: np.ndarray, clip_percentile: float = 99.5) -> np.ndarray:
    """``[H, W(, C)]`` -> ``[H, W]`` in ``[-1, 1]``: channel sum, divide by a percentile of ``|a|``, clip."""
    a = np.asarray(attribution, dtype=np.float64)
    if a.ndim == 3:
        a = a.sum(axis=-1)
    if a.ndim != 2:
        raise ValueError(f"attribution must have shape [H, W] or [H, W, C], got {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError("attribution holds NaN or infinite values: no color for them")
    if not 0 < clip_percentile <= 100:
        raise ValueError(f"clip_percentile must lie in (0, 100], got {clip_percentile}")
    scale = np.percentile(np.abs(a), clip_percentile)
    if scale <= 0:
        scale = np.abs(a).max()
    return np.clip(a / scale, -1.0, 1.0) if scale > 0 else np.zeros_like(a)


@checked(clip_percentile=number(0, 100, low_open=True))
def signed_rgb(attribution: np.ndarray, clip_percentile: float = 99.5) -> np.ndarray:
    """An RGB image ``[H, W, 3]`` on white: red for positive, blue for negative attribution."""
    a = normalize_signed(attribution, clip_percentile)
    pos, neg = np.clip(a, 0, 1), np.clip(-a, 0, 1)
    rgb = np.ones((*a.shape, 3))
    rgb[..., 1] -= pos + neg  # both signs fade green
    rgb[..., 2] -= pos  # positive: red
    rgb[..., 0] -= neg  # negative: blue
    return np.clip(rgb, 0, 1)


@checked(clip_percentile=number(0, 100, low_open=True))
def absolute_map(attribution: np.ndarray, clip_percentile: float = 99.5) -> np.ndarray:
    """``|a|`` summed over channels, scaled to ``[0, 1]`` by the same percentile clipping."""
    a = np.asarray(attribution, dtype=np.float64)
    if a.ndim == 3:
        a = np.abs(a).sum(axis=-1)
    return np.abs(normalize_signed(np.abs(a), clip_percentile))


@checked(alpha=FRACTION, clip_percentile=number(0, 100, low_open=True))
def overlay(
    image: np.ndarray,
    attribution: np.ndarray,
    *,
    alpha: float = 0.8,
    signed: bool = True,
    clip_percentile: float = 99.5,
) -> np.ndarray:
    """The attribution painted over the input's grey levels, ``[H, W, 3]`` in ``[0, 1]``.

    Each pixel blends the grey image with red (positive) or blue (negative) in proportion
    to ``alpha * |a|`` (``a`` normalised as in the module docstring); ``signed=False`` uses
    one colour (orange) for ``|a|``. Pixels without attribution show the image unchanged.
    """
    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 3:
        raise ValueError(f"image must have shape [H, W, C], got {img.shape}")
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    grey = img.mean(axis=-1) if img.shape[-1] != 1 else img[..., 0]
    base = np.repeat(np.clip(grey, 0, 1)[..., None], 3, axis=-1)
    if signed:
        a = normalize_signed(attribution, clip_percentile)
        colour = np.where(a[..., None] >= 0, [1.0, 0.0, 0.0], [0.0, 0.0, 1.0])
    else:
        a = absolute_map(attribution, clip_percentile)
        colour = np.broadcast_to([1.0, 0.55, 0.0], (*a.shape, 3))
    if a.shape != base.shape[:2]:
        raise ValueError(f"attribution {a.shape} and image {img.shape} differ in [H, W]")
    w = alpha * np.abs(a)[..., None]
    return np.clip(base * (1 - w) + colour * w, 0, 1)


def attribution_grid(
    images: np.ndarray,
    attributions: Sequence[np.ndarray] | np.ndarray,
    path: str | Path | None = None,
    *,
    row_titles: Sequence[str] | None = None,
    column_titles: Sequence[str] | None = None,
    signed: bool = True,
    clip_percentile: float = 99.5,
    show_sums: bool = True,
    title: str | None = None,
    overlay_input: bool = False,
) -> Path:
    """A grid figure: the inputs in the first row, one row of maps per method.

    The figure is a ``matplotlib.figure.Figure`` made without ``pyplot``: the global
    backend is never changed (a notebook keeps its inline display, where the returned
    figure shows itself), and nothing is left open in pyplot's figure manager.

    Args:
      images: ``[N, H, W, C]`` in ``[0, 1]``.
      attributions: one ``[N, H, W, C]`` array per method (or a single array).
      path: a PNG file to write too (local or ``gs://``), or None.
      row_titles: method names, one per attribution array.
      column_titles: one per image (e.g. ``"label 3, pred 3"``).
      signed: red/blue signed maps (default) or grey absolute maps.
      clip_percentile: see the module docstring.
      show_sums: print the raw attribution sum under each map.
      title: figure title.
      overlay_input: paint the maps over the input images (:func:`overlay`).

    Returns:
      The figure.
    """
    from matplotlib.figure import Figure

    images = np.asarray(images)
    if isinstance(attributions, np.ndarray) or hasattr(attributions, "shape"):
        attributions = [attributions]
    attributions = [np.asarray(a) for a in attributions]
    for i, a in enumerate(attributions):
        if a.shape != images.shape:
            raise ValueError(
                f"attributions[{i}] must have the images' shape {images.shape}, got {a.shape}"
            )
    n, rows = len(images), 1 + len(attributions)
    fig = Figure(figsize=(1.6 * n, 1.7 * rows))
    axes = fig.subplots(rows, n, squeeze=False)
    for j in range(n):
        img = images[j]
        axes[0, j].imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
        if column_titles is not None:
            axes[0, j].set_title(column_titles[j], fontsize=7)
        for i, a in enumerate(attributions, start=1):
            ax = axes[i, j]
            if overlay_input:
                ax.imshow(overlay(img, a[j], signed=signed, clip_percentile=clip_percentile))
            elif signed:
                ax.imshow(signed_rgb(a[j], clip_percentile))
            else:
                ax.imshow(absolute_map(a[j], clip_percentile), cmap="gray", vmin=0, vmax=1)
            if show_sums:
                ax.set_xlabel(f"sum {float(a[j].sum()):+.3g}", fontsize=6)
            if j == 0 and row_titles is not None:
                ax.set_ylabel(row_titles[i - 1], fontsize=7)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title + ("  (red +, blue -)" if signed else ""), fontsize=8)
    fig.tight_layout()
    if path is not None:
        path = as_path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as f:  # through epath: local or gs://
            fig.savefig(f, format="png", dpi=120)
    # A pyplot-free Figure has no display of its own in Jupyter (IPython's inline formatter
    # knows pyplot's figures only): the PNG repr makes the returned figure show inline.
    fig._repr_png_ = functools.partial(_png, fig)
    return fig


def _png(fig, dpi: int = 100) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


__all__ = [
    "absolute_map",
    "attribution_grid",
    "normalize_signed",
    "overlay",
    "signed_rgb",
]
