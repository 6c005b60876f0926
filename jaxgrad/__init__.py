"""jaxgrad: gradient-based interpretability in JAX.

Input-gradients and the implicit density view of a classifier, score matching, attribution
methods, their evaluations, and the Flax training that goes with them. All functions are
pure and follow the contract ``logit_fn(params, x) -> logits`` (see ``jaxgrad.types``).
"""

from jaxgrad import data, models, sharding, training
from jaxgrad.gradients import input_gradients, select_logits
from jaxgrad.types import LogitFn

__version__ = "0.1.0"

__all__ = [
    "LogitFn",
    "__version__",
    "data",
    "input_gradients",
    "models",
    "select_logits",
    "sharding",
    "training",
]
