"""Evaluations of attributions: one per file (see DESIGN.md)."""

from jaxgrad.evaluation.similarity import rankdata_average, spearman, spearman_abs, spearman_nz

__all__ = ["rankdata_average", "spearman", "spearman_abs", "spearman_nz"]
