"""What the experiments write: markdown reports, JSON and CSV files, and figures.

A main measures, then hands its results to its module of :mod:`experiments.reports`, which
composes these helpers. Markdown helpers return strings (blocks) that :func:`write_report`
joins with blank lines into ``report.md``; every function that writes a file does so on
process 0 only (the other hosts of a multi-host run return without writing) and returns the
path. Figures use matplotlib's file-only Agg backend, imported when a figure is drawn.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from etils import epath

from jaxgrad.paths import as_path
from jaxgrad.sharding import is_main_process
from jaxgrad.viz import attribution_grid

# Markdown.


def title(text: str) -> str:
    """A level-1 heading."""
    return f"# {text}"


def heading(text: str) -> str:
    """A level-2 heading."""
    return f"## {text}"


def paragraph(*sentences: str) -> str:
    """A paragraph: the sentences joined by spaces."""
    return " ".join(s.strip() for s in sentences if s)


def bullets(*items: str) -> str:
    """A bulleted list, one item per argument."""
    return "\n".join(f"- {item}" for item in items)


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A markdown table; cells are written with ``str`` (format numbers before)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def measured_vs_paper(
    header: Sequence[str],
    rows: Sequence[Sequence[Any]],
    paper: Sequence[Any],
    *,
    paper_header: str = "paper",
) -> str:
    """A table of measured rows with the paper's figure for each row in a last column."""
    if len(paper) != len(rows):
        raise ValueError(f"one paper cell per row: {len(paper)} cells for {len(rows)} rows")
    return table([*header, paper_header], [[*row, p] for row, p in zip(rows, paper, strict=True)])


def image(path: str | Path, alt: str) -> str:
    """A link to an image in the report's folder."""
    return f"![{alt}]({Path(path).name})"


def fmt_ci99(stats: Mapping[str, float], digits: int = 3) -> str:
    """``[low, high]`` of a ``{"ci99_low", "ci99_high", ...}`` dict."""
    return f"[{stats['ci99_low']:.{digits}f}, {stats['ci99_high']:.{digits}f}]"


def fmt_interval(stats: Mapping[str, float], digits: int = 3) -> str:
    """``mean [low, high]`` of a ``{"mean", "ci99_low", "ci99_high"}`` dict."""
    return f"{stats['mean']:.{digits}f} {fmt_ci99(stats, digits)}"


def source_name(source: str) -> str:
    """A data source as a report names it (without backticks).

    An ``idx:<folder>`` source is named by its folder's name (``idx:/data/mnist`` ->
    ``mnist``): the path is where the files lie on one machine, not what was measured. Any
    other source (``digits``, ``tfds:cifar10``) is named as it is.
    """
    if source.startswith("idx:"):
        return Path(source[len("idx:") :]).name or source
    return source


def describe_model(spec) -> str:
    """A short name of a model section (``name`` and its fields) for a report.

    ``mlp``: ``MLP (hidden sizes)``; ``resnet18`` / ``resnet50`` / ``vgg11``: the CIFAR
    network's name; ``vgg``: its layers;
    the two-convolution ``cnn``: ``CNN conv5x5x<f1>, conv5x5x<f2>, dense <d>``.
    """
    if spec.name == "mlp":
        return f"MLP {tuple(spec.hidden)}"
    if spec.name in ("resnet18", "resnet50"):
        return f"CIFAR ResNet-{spec.name[len('resnet') :]}"
    if spec.name == "vgg11":
        return "CIFAR VGG-11 (BatchNorm)"
    if spec.name == "vgg":
        layers = " ".join("pool" if w == "M" else f"conv3x3x{w}" for w in spec.layers)
        return f"VGG-style CNN with BatchNorm ({layers}, global average, dense)"
    return f"CNN conv5x5x{spec.features[0]}, conv5x5x{spec.features[1]}, dense {spec.dense}"


def workdir_path(workdir: str | Path) -> epath.Path:
    """A run's folder as an ``epath.Path``: ``gs://...`` as it is, a local path made absolute.

    Everything an experiment writes (checkpoints, metrics, figures, the report) goes through
    it, so ``--workdir=gs://bucket/run`` writes to the bucket on a TPU VM.
    """
    return as_path(workdir)


def write_report(workdir: Path, blocks: Sequence[str]) -> Path:
    """Writes ``report.md``: the blocks separated by blank lines."""
    path = workdir_path(workdir) / "report.md"
    if is_main_process():
        path.write_text("\n\n".join(blocks) + "\n")
    return path


# JSON and CSV.


def _to_python(value: Any) -> Any:
    return np.asarray(value).tolist()


def _strict(value: Any) -> Any:
    """``value`` with NaN and infinities as None (strict JSON has no NaN)."""
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strict(v) for v in value]
    if isinstance(value, np.ndarray | np.generic) or (
        hasattr(value, "__array__") and not isinstance(value, str | bytes)
    ):
        return _strict(np.asarray(value).tolist())
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def write_json(path: str | Path, obj: Any, *, indent: int = 1) -> Path:
    """Writes ``obj`` as strict JSON: numpy arrays as lists, NaN and infinities as null."""
    path = workdir_path(path)
    if is_main_process():
        text = json.dumps(_strict(obj), indent=indent, default=_to_python, allow_nan=False)
        path.write_text(text)
    return path


def write_config(workdir: Path, config) -> Path:
    """Writes ``config.json`` of an ``ml_collections`` config, creating ``workdir``."""
    path = workdir_path(workdir) / "config.json"
    if is_main_process():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(config.to_json_best_effort(indent=2))
    return path


def write_csv(path: str | Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> Path:
    """Writes a CSV file with a header row (local or remote, through epath)."""
    path = workdir_path(path)
    if is_main_process():
        buffer = io.StringIO()
        w = csv.writer(buffer)
        w.writerow(header)
        w.writerows(rows)
        path.write_text(buffer.getvalue())
    return path


# Figures.


def pyplot():
    """``matplotlib.pyplot`` on the file-only Agg backend (no display on CI or TPU VMs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


class Curve(NamedTuple):
    """One line of a :class:`Panel`.

    Attributes:
      x, y: the points.
      label: the legend entry (None: none).
      band: ``(low, high)`` drawn as a shaded band around the line, or None.
      yerr: error bars, or None.
      style: a matplotlib format string (``"o-"``, ``"k--"``).
      color: a matplotlib colour, or None for the next in the cycle.
    """

    x: Sequence[float]
    y: Sequence[float]
    label: str | None = None
    band: tuple[Sequence[float], Sequence[float]] | None = None
    yerr: Sequence[float] | None = None
    style: str = "o-"
    color: str | None = None


class Panel(NamedTuple):
    """One set of axes of :func:`curves`.

    Attributes:
      curves: the lines.
      title, xlabel, ylabel: texts (None: none).
      xticks: names of the points ``0, 1, ...`` for a categorical x axis (None: numbers).
      xscale, yscale: ``"linear"`` or ``"log"``.
      hline: the y of a thin grey reference line, or None.
      legend_size: the legend's font size (None: no legend).
    """

    curves: Sequence[Curve]
    title: str | None = None
    xlabel: str | None = None
    ylabel: str | None = None
    xticks: Sequence[str] | None = None
    xscale: str = "linear"
    yscale: str = "linear"
    hline: float | None = None
    legend_size: float | None = 7


def curves(
    path: str | Path,
    panels: Sequence[Panel],
    *,
    panel_size: tuple[float, float] = (5.0, 3.8),
    dpi: int = 120,
) -> Path:
    """Writes a PNG of line plots side by side, one per panel, with bands or error bars."""
    path = workdir_path(path)
    if not is_main_process():
        return path
    plt = pyplot()
    w, h = panel_size
    fig, axes = plt.subplots(1, len(panels), figsize=(w * len(panels), h), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        for c in panel.curves:
            kw = {} if c.color is None else {"color": c.color}
            if c.yerr is not None:
                ax.errorbar(c.x, c.y, yerr=c.yerr, fmt=c.style, capsize=3, label=c.label, **kw)
            else:
                (line,) = ax.plot(c.x, c.y, c.style, label=c.label, **kw)
                kw = {"color": line.get_color()}
            if c.band is not None:
                ax.fill_between(c.x, c.band[0], c.band[1], alpha=0.2, **kw)
        if panel.hline is not None:
            ax.axhline(panel.hline, color="grey", lw=0.8)
        ax.set_xscale(panel.xscale)  # before the ticks: setting a scale resets them
        ax.set_yscale(panel.yscale)
        if panel.xticks is not None:
            ax.set_xticks(range(len(panel.xticks)), panel.xticks, rotation=30, fontsize=7)
        if panel.title:
            ax.set_title(panel.title, fontsize=9)
        if panel.xlabel:
            ax.set_xlabel(panel.xlabel)
        if panel.ylabel:
            ax.set_ylabel(panel.ylabel)
        if panel.legend_size and any(c.label for c in panel.curves):
            ax.legend(fontsize=panel.legend_size)
    fig.tight_layout()
    with path.open("wb") as f:
        fig.savefig(f, format="png", dpi=dpi)
    plt.close(fig)
    return path


# The rank correlations of a sanity table (jaxgrad.drivers.sanity_table), in plotting order.
SANITY_METRICS = ("spearman", "spearman_abs", "spearman_nz")


def sanity_panel(rows, stages, method: str, title: str, names=None) -> Panel:
    """The three rank correlations of ``method``'s maps with the trained ones, per stage.

    Means with 99% bands from :func:`jaxgrad.drivers.sanity_table`'s ``rows``; ``names``
    renames the metrics in the legend.
    """
    by = {(r["stage"], r["metric"]): r for r in rows if r["method"] == method}
    xs = np.arange(len(stages))

    def column(metric, field):
        return [by[(s, metric)][field] for s in stages]

    return Panel(
        [
            Curve(
                xs,
                column(metric, "mean"),
                (names or {}).get(metric, metric),
                band=(column(metric, "ci99_low"), column(metric, "ci99_high")),
                color=colour,
            )
            for metric, colour in zip(
                SANITY_METRICS, ("tab:blue", "tab:green", "tab:red"), strict=True
            )
        ],
        title=title,
        ylabel="rank correlation with the trained map",
        xticks=stages,
        hline=0.0,
    )


def image_grid(
    path: str | Path,
    images: np.ndarray,
    *,
    row_titles: Sequence[str] | None = None,
    column_titles: Sequence[str] | None = None,
    title: str | None = None,
    dpi: int = 110,
) -> Path:
    """Writes a PNG grid of grey images: a row of the grid per row of ``images``.

    Args:
      path: the PNG file to write.
      images: ``[R, C, H, W, 1]`` or ``[R, C, H, W]`` in ``[0, 1]``.
      row_titles: one per row, on the left.
      column_titles: one per column, on top.
      title: the figure's title.
      dpi: resolution.
    """
    path = workdir_path(path)
    if not is_main_process():
        return path
    plt = pyplot()
    images = np.asarray(images)
    rows, cols = images.shape[:2]
    fig, axes = plt.subplots(rows, cols, figsize=(cols, 1.1 * rows + 0.4), squeeze=False)
    for r in range(rows):
        for c in range(cols):
            ax = axes[r, c]
            img = images[r, c]
            ax.imshow(img[..., 0] if img.ndim == 3 else img, cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
            if c == 0 and row_titles is not None:
                ax.set_ylabel(row_titles[r], fontsize=7)
            if r == 0 and column_titles is not None:
                ax.set_title(column_titles[c], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with path.open("wb") as f:
        fig.savefig(f, format="png", dpi=dpi)
    plt.close(fig)
    return path


def attribution_figure(
    path: str | Path, images: np.ndarray, maps: Sequence[np.ndarray], **kw: Any
) -> Path:
    """Writes ``jaxgrad.viz.attribution_grid``: the inputs, then a row of maps per method.

    ``images`` and each of ``maps`` are ``[N, H, W, C]`` (numpy or JAX); ``kw`` as there
    (``row_titles``, ``column_titles``, ``title``...).
    """
    path = workdir_path(path)
    if is_main_process():
        attribution_grid(np.asarray(images), [np.asarray(m) for m in maps], path, **kw)
    return path


def diff_roar_files(workdir, results: dict, *, units: str = "pixels") -> None:
    """``diff_roar.csv`` (a row per curve and fraction) and ``diff_roar.png``.

    ``results``: name -> the dict ``jaxgrad.drivers.roar`` returns (DiffROAR protocol);
    ``units``: what ``k`` is a share of, for the axis label.
    """
    write_csv(
        workdir / "diff_roar.csv",
        [
            "data/attribution",
            "k",
            "top_k_accuracy",
            "bottom_k_accuracy",
            "diff_roar",
            "diff_roar_se",
            "diff_roar_pair_std",
            "seeds",
        ],
        [
            [
                name,
                k,
                r["top_k_accuracy"][i],
                r["bottom_k_accuracy"][i],
                r["diff_roar"][i],
                r["diff_roar_se"][i],
                r["diff_roar_pair_std"][i],
                len(r["top_k_accuracy_per_seed"]),
            ]
            for name, r in results.items()
            for i, k in enumerate(r["fractions"])
        ],
    )
    panel = Panel(
        [
            Curve(r["fractions"], r["diff_roar"], name, yerr=r["diff_roar_pair_std"])
            for name, r in results.items()
        ],
        title="DiffROAR, retrained models (error bars: std over seed pairs)",
        xlabel=f"k (fraction of {units} kept)",
        ylabel="DiffROAR = acc(top-k kept) - acc(bottom-k kept)",
        hline=0.0,
        legend_size=8,
    )
    curves(workdir / "diff_roar.png", [panel], panel_size=(6, 4))
