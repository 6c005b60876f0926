"""Executes the notebooks end to end (what CI runs), or renders their ``.ipynb`` for Colab.

The notebooks are kept as jupytext percent-format ``.py`` files (they diff and review like
code); the ``.ipynb`` beside each is rendered from it, without outputs, for Colab's links.

  python notebooks/run.py                   # execute every notebook with SMOKE = True
  python notebooks/run.py sanity --full     # one notebook, its full-size parameters
  python notebooks/run.py --render          # rewrite the .ipynb files from the .py files
  python notebooks/run.py --check-rendered  # fail if an .ipynb differs from its .py

Execution is papermill's convention without papermill: after the cell tagged ``parameters``
a cell setting ``SMOKE = True`` is inserted. A cell that raises fails the run (nbclient's
``CellExecutionError``, naming the cell); the executed notebook, with its outputs (up to the
failing cell), is written to ``--out`` (default ``runs/notebooks``) and the count of figures
it displayed is printed.

The kernel inherits the environment: ``make test-slow`` exports
``XLA_FLAGS=--xla_force_host_platform_device_count=8``, so in CI the notebooks see 8 CPU
devices, as a Colab TPU runtime shows 8 cores, and quickstart's sharded cell really shards
(it gathers, with no cross-device collectives to stall on 2 cores). Run with ``XLA_FLAGS=``
for one device.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
NOTEBOOKS = ("quickstart", "rethinking", "sanity")


def read(name: str):
    """The notebook ``name`` from its ``.py`` source, as an ``nbformat`` node."""
    import jupytext

    nb = jupytext.read(HERE / f"{name}.py")
    for i, cell in enumerate(nb.cells):  # stable ids (jupytext draws random ones): no churn
        cell.id = f"{name}-{i}"
    return nb


def render(name: str) -> str:
    """The ``.ipynb`` text of ``name``: the ``.py`` source, no outputs, a stable form."""
    import jupytext

    return jupytext.writes(read(name), fmt="ipynb")


def with_parameters(nb, lines: str):
    """``nb`` with a cell of ``lines`` inserted after the cell tagged ``parameters``."""
    import nbformat

    index = next(
        (i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])), None
    )
    if index is None:
        raise ValueError("the notebook has no cell tagged 'parameters'")
    cell = nbformat.v4.new_code_cell(lines, metadata={"tags": ["injected-parameters"]})
    nb.cells.insert(index + 1, cell)
    return nb


def figures(nb) -> int:
    """The number of images (``image/png`` outputs) an executed notebook displayed."""
    return sum(
        "image/png" in out.get("data", {})
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
    )


def execute(name: str, *, smoke: bool = True, out: Path | None = None, timeout: int = 900):
    """Runs notebook ``name`` top to bottom in a fresh kernel; returns ``(notebook, seconds)``.

    Raises ``nbclient.exceptions.CellExecutionError`` at the first cell that raises.
    """
    import nbformat
    from nbclient import NotebookClient

    nb = read(name)
    if smoke:
        nb = with_parameters(nb, "SMOKE = True")
    t0 = time.perf_counter()
    # The kernel's working directory is the repository root, as in Colab after the clone.
    client = NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": HERE.parent}}
    )
    try:
        client.execute()
    finally:  # a failing notebook is written too, its error under the failing cell
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, out / f"{name}.ipynb")
    return nb, time.perf_counter() - t0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", help=f"any of {NOTEBOOKS} (default: all)")
    parser.add_argument("--full", action="store_true", help="the notebooks' own parameters")
    parser.add_argument("--out", type=Path, default=Path("runs/notebooks"))
    parser.add_argument("--render", action="store_true", help="rewrite the .ipynb files")
    parser.add_argument("--check-rendered", action="store_true", help="compare the .ipynb files")
    args = parser.parse_args(argv)
    names = args.names or list(NOTEBOOKS)
    unknown = [n for n in names if n not in NOTEBOOKS]
    if unknown:
        parser.error(f"unknown notebooks {unknown}; choose from {NOTEBOOKS}")
    if args.render or args.check_rendered:
        stale = []
        for name in names:
            path = HERE / f"{name}.ipynb"
            text = render(name)
            if args.render:
                path.write_text(text)
                print(f"rendered {path}")
            elif not path.exists() or path.read_text() != text:
                stale.append(path.name)
        if stale:
            print(f"out of date with their .py: {stale}; run python notebooks/run.py --render")
            return 1
        return 0
    for name in names:
        nb, seconds = execute(name, smoke=not args.full, out=args.out)
        print(f"{name}: {seconds:.0f} s, {figures(nb)} figures -> {args.out / (name + '.ipynb')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
