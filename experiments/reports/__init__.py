"""What each experiment writes: one module per main, each with a ``write`` entry point.

A main measures and hands its results (and the arrays its figures show) to
``reports.<name>.write``, which writes ``results.json``, the experiment's other JSON and CSV
files, its figures and ``report.md`` into the workdir with the helpers of
:mod:`experiments.report`. These modules import only :mod:`experiments.report`, numpy and
the standard library: they format what was measured and measure nothing.
"""

from experiments.reports import (
    block_mnist,
    demo,
    diff_roar,
    fullgrad,
    jacobian_matching,
    sanity_checks,
    score_matching,
    shift_manipulation,
    synthetic,
)

__all__ = [
    "block_mnist",
    "demo",
    "diff_roar",
    "fullgrad",
    "jacobian_matching",
    "sanity_checks",
    "score_matching",
    "shift_manipulation",
    "synthetic",
]
