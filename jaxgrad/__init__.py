"""jaxgrad: gradient-based interpretability in JAX.

Input-gradients and the implicit density view of a classifier, score matching, attribution
methods, their evaluations, and the Flax training that goes with them. All functions are
pure and follow the contract ``logit_fn(params, x) -> logits`` (see ``jaxgrad.types``).
"""

from jaxgrad import (
    attribution,
    data,
    distillation,
    drivers,
    evaluation,
    models,
    paths,
    score_matching,
    sharding,
    trace_estimators,
    training,
    types,
    viz,
)
from jaxgrad.distillation import (
    distillation_loss,
    jacobian_matching_loss,
    noisy_distillation_loss,
)
from jaxgrad.gradients import (
    cosine_similarity,
    gradient_manipulation_loss,
    hvp,
    input_gradients,
    log_density,
    score,
    select_logits,
    shift_logits,
    shift_to_target_map,
)
from jaxgrad.score_matching import (
    Forward,
    anti_score_matching_loss,
    gradient_norm_regularizer,
    logits_with_vjp,
    make_regularizer,
    regularized_loss,
    regularized_loss_with_aux,
    regularizer,
    score_matching_loss,
    stability_regularizer,
)
from jaxgrad.trace_estimators import (
    hessian_trace,
    hessian_trace_exact,
    hessian_trace_hutchinson,
    hessian_trace_taylor,
)
from jaxgrad.types import LogitFn, TappedLogitFn

__version__ = "0.1.0"

__all__ = [
    "Forward",
    "LogitFn",
    "TappedLogitFn",
    "__version__",
    "anti_score_matching_loss",
    "attribution",
    "cosine_similarity",
    "data",
    "distillation",
    "distillation_loss",
    "drivers",
    "evaluation",
    "gradient_manipulation_loss",
    "gradient_norm_regularizer",
    "hessian_trace",
    "hessian_trace_exact",
    "hessian_trace_hutchinson",
    "hessian_trace_taylor",
    "hvp",
    "input_gradients",
    "jacobian_matching_loss",
    "log_density",
    "logits_with_vjp",
    "make_regularizer",
    "models",
    "noisy_distillation_loss",
    "paths",
    "regularized_loss",
    "regularized_loss_with_aux",
    "regularizer",
    "score",
    "score_matching",
    "score_matching_loss",
    "select_logits",
    "sharding",
    "shift_logits",
    "shift_to_target_map",
    "stability_regularizer",
    "trace_estimators",
    "training",
    "types",
    "viz",
]
