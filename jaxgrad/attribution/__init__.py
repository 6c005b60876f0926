"""Attribution methods with the common signature ``method(logit_fn, params, x, target, *, key=None, ...)``.

Every method returns an array of ``x``'s shape, is pure, and is jit- and vmap-compatible;
the caller jits (``jax.jit(functools.partial(method, logit_fn, steps=...))``).
"""

from jaxgrad.attribution._paths import RULES, quadrature
from jaxgrad.attribution.gradient import gradient, gradient_x_input
from jaxgrad.attribution.integrated_gradients import integrated_gradients
from jaxgrad.attribution.smoothgrad import AGGREGATES, smoothgrad

__all__ = [
    "AGGREGATES",
    "RULES",
    "gradient",
    "gradient_x_input",
    "integrated_gradients",
    "quadrature",
    "smoothgrad",
]
