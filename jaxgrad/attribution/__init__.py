"""Attribution methods with the common signature ``method(logit_fn, params, x, target, *, key=None, ...)``.

Every method returns an array of ``x``'s shape (``[B, T, *S]`` for ``[B, T]`` targets), is
pure, and is jit- and vmap-compatible; the helpers beside them return what their docstrings
say (``gradcam_layer_map``: ``[B, h, w]``; ``completeness_delta``: ``[B]``;
``fullgrad_decomposition``: a ``FullGradDecomposition``). The caller jits (``jax.jit(functools.partial(method, logit_fn, steps=...))``). The layer
methods (``fullgrad``, ``gradcam``, ``guided_backprop``) take a
:class:`jaxgrad.types.TappedLogitFn`, which declares the model internals they need.
Running a method over a whole data set is a driver: ``jaxgrad.drivers.attribute_dataset``.
"""

from jaxgrad.attribution._paths import RULES, quadrature
from jaxgrad.attribution.blur_ig import blur_integrated_gradients
from jaxgrad.attribution.expected_gradients import expected_gradients
from jaxgrad.attribution.fullgrad import (
    FullGradDecomposition,
    FullGradWarning,
    completeness_gap,
    fullgrad,
    fullgrad_decomposition,
)
from jaxgrad.attribution.gradcam import VARIANTS, gradcam, gradcam_layer_map
from jaxgrad.attribution.gradient import POSTPROCESS, gradient, gradient_x_input
from jaxgrad.attribution.guided_backprop import guided, guided_backprop
from jaxgrad.attribution.guided_ig import guided_integrated_gradients
from jaxgrad.attribution.integrated_gradients import completeness_delta, integrated_gradients
from jaxgrad.attribution.smoothgrad import STATISTICS, smoothgrad

__all__ = [
    "POSTPROCESS",
    "RULES",
    "STATISTICS",
    "VARIANTS",
    "FullGradDecomposition",
    "blur_integrated_gradients",
    "completeness_delta",
    "expected_gradients",
    "FullGradWarning",
    "completeness_gap",
    "fullgrad",
    "fullgrad_decomposition",
    "gradcam",
    "gradcam_layer_map",
    "gradient",
    "gradient_x_input",
    "guided",
    "guided_backprop",
    "guided_integrated_gradients",
    "integrated_gradients",
    "quadrature",
    "smoothgrad",
]
