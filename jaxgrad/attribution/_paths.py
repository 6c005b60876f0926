"""Quadrature rules on [0, 1] for path integrals (Integrated Gradients and its variants)."""

from __future__ import annotations

import numpy as np

from jaxgrad._validation import check_positive_int

RULES = ("left", "right", "middle", "trapezoid", "gauss_legendre")


def quadrature(rule: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes ``alpha`` in [0, 1] and weights summing to 1 for ``steps`` evaluations.

    ``left``/``right``/``middle``: Riemann sums with ``alpha = k/m``, ``(k+1)/m``,
    ``(k+1/2)/m``; ``trapezoid``: ``alpha = linspace(0, 1, m)``, steps ``1/(m-1)`` with halved
    end weights (Captum's ``riemann_trapezoid`` uses the same nodes with steps ``1/m``, so its
    weights sum to ``(m-1)/m`` and its IG is scaled by that factor); ``gauss_legendre``: Gauss-Legendre nodes mapped to
    [0, 1], exact for polynomials of degree ``2m - 1``.

    Raises:
      ValueError: unknown rule, ``steps < 1`` (``< 2`` for the trapezoid).
    """
    m = check_positive_int(steps, "steps")
    k = np.arange(m, dtype=np.float64)
    if rule == "left":
        return k / m, np.full(m, 1.0 / m)
    if rule == "right":
        return (k + 1) / m, np.full(m, 1.0 / m)
    if rule == "middle":
        return (k + 0.5) / m, np.full(m, 1.0 / m)
    if rule == "trapezoid":
        if m < 2:
            raise ValueError(f"the trapezoid rule needs steps >= 2, got {m}")
        w = np.full(m, 1.0 / (m - 1))
        w[0] = w[-1] = 0.5 / (m - 1)
        return np.linspace(0.0, 1.0, m), w
    if rule == "gauss_legendre":
        nodes, weights = np.polynomial.legendre.leggauss(m)
        return (nodes + 1) / 2, weights / 2
    raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
