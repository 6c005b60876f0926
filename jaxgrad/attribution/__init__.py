"""Attribution methods with the common signature ``method(logit_fn, params, x, target, *, key=None, ...)``.

Every method returns an array of ``x``'s shape, is pure, and is jit- and vmap-compatible;
the caller jits (``jax.jit(functools.partial(method, logit_fn, steps=...))``).
"""

from jaxgrad.attribution._paths import RULES, quadrature
from jaxgrad.attribution.blur_ig import blur_integrated_gradients
from jaxgrad.attribution.dataset import attribute_dataset
from jaxgrad.attribution.expected_gradients import expected_gradients
from jaxgrad.attribution.fullgrad import effective_biases, fullgrad, fullgrad_decomposition
from jaxgrad.attribution.gradcam import gradcam
from jaxgrad.attribution.gradient import gradient, gradient_x_input
from jaxgrad.attribution.guided_backprop import guided, guided_backprop
from jaxgrad.attribution.guided_ig import guided_integrated_gradients
from jaxgrad.attribution.integrated_gradients import integrated_gradients
from jaxgrad.attribution.smoothgrad import AGGREGATES, smoothgrad

__all__ = [
    "AGGREGATES",
    "RULES",
    "attribute_dataset",
    "blur_integrated_gradients",
    "effective_biases",
    "expected_gradients",
    "fullgrad",
    "fullgrad_decomposition",
    "gradcam",
    "gradient",
    "gradient_x_input",
    "guided",
    "guided_backprop",
    "guided_integrated_gradients",
    "integrated_gradients",
    "quadrature",
    "smoothgrad",
]
