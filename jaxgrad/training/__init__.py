"""Train state, sharded update steps, losses, optimizers, checkpoints and metric logs."""

from jaxgrad.training.checkpoint import Checkpointer, CheckpointError
from jaxgrad.training.cost import abstract_train_state, compiled_cost
from jaxgrad.training.logging import MetricWriter, Progress, read_metrics
from jaxgrad.training.loop import (
    Diverged,
    Preempted,
    epoch_steps,
    fit,
    train_for_epochs,
    train_seeds_for_epochs,
)
from jaxgrad.training.losses import (
    LossFn,
    classifier_loss,
    cross_entropy,
    masked_mean,
    regularized_classifier_loss,
    with_augmentation,
)
from jaxgrad.training.optim import make_optimizer, make_schedule
from jaxgrad.training.pgd import adversarial_classifier_loss, pgd_attack
from jaxgrad.training.state import (
    TrainState,
    create_train_state,
    evaluate,
    make_eval_step,
    make_train_step,
    train_state_from,
)

__all__ = [
    "CheckpointError",
    "Checkpointer",
    "LossFn",
    "MetricWriter",
    "Diverged",
    "Preempted",
    "Progress",
    "TrainState",
    "abstract_train_state",
    "adversarial_classifier_loss",
    "classifier_loss",
    "compiled_cost",
    "create_train_state",
    "cross_entropy",
    "epoch_steps",
    "evaluate",
    "fit",
    "make_eval_step",
    "make_optimizer",
    "make_schedule",
    "make_train_step",
    "masked_mean",
    "pgd_attack",
    "read_metrics",
    "regularized_classifier_loss",
    "train_for_epochs",
    "train_seeds_for_epochs",
    "train_state_from",
    "with_augmentation",
]
