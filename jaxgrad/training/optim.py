"""Optimizers and learning-rate schedules (optax), by name.

``sgd``: SGD with (Nesterov optional) momentum and coupled L2 weight decay, as in PyTorch's
``SGD(weight_decay=...)`` that the papers' code uses; ``adam``: Adam, with the same coupled
L2 term when ``weight_decay > 0`` (``adamw`` gives decoupled decay). Schedules: ``constant``,
``multistep`` (multiply by ``gamma`` at each milestone) and ``cosine`` (to zero at
``total_steps``), each with an optional linear warm-up.
"""

from __future__ import annotations

from collections.abc import Sequence

import optax

from jaxgrad._validation import (
    BOOL,
    FRACTION,
    NONNEGATIVE,
    NONNEGATIVE_INT,
    OPTIONAL_POSITIVE_INT,
    POSITIVE,
    as_int,
    check_number,
    checked,
    number,
)


@checked(
    learning_rate=POSITIVE,
    total_steps=OPTIONAL_POSITIVE_INT,
    gamma=number(0, 1, low_open=True),
    warmup_steps=NONNEGATIVE_INT,
)
def make_schedule(
    name: str,
    learning_rate: float,
    *,
    total_steps: int | None = None,
    milestones: Sequence[int] = (),
    gamma: float = 0.1,
    warmup_steps: int = 0,
) -> optax.Schedule:
    """A learning-rate schedule by name: ``constant``, ``multistep`` or ``cosine``."""
    if learning_rate <= 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
    if name == "constant":
        sched = optax.constant_schedule(learning_rate)
    elif name == "multistep":
        if isinstance(milestones, str) or not hasattr(milestones, "__iter__"):
            raise ValueError(f"milestones must be a sequence of steps, got {milestones!r}")
        milestones = [as_int(m, "each of milestones", low=0) for m in milestones]
        if sorted(milestones) != list(milestones):
            raise ValueError(f"milestones must be increasing, got {milestones}")
        sched = optax.piecewise_constant_schedule(
            learning_rate, {int(m) - warmup_steps: gamma for m in milestones}
        )
    elif name == "cosine":
        if not total_steps or total_steps <= warmup_steps:
            raise ValueError(f"cosine needs total_steps > warmup_steps, got {total_steps}")
        sched = optax.cosine_decay_schedule(learning_rate, total_steps - warmup_steps)
    else:
        raise ValueError(f"schedule name must be 'constant', 'multistep' or 'cosine', got {name!r}")
    if warmup_steps:
        warm = optax.linear_schedule(0.0, learning_rate, warmup_steps)
        sched = optax.join_schedules([warm, sched], [warmup_steps])
    return sched


@checked(
    momentum=FRACTION,
    weight_decay=NONNEGATIVE,
    b1=number(0, 1, high_open=True),
    b2=number(0, 1, high_open=True),
    eps=POSITIVE,
    learning_rate=number(0, low_open=True, schedule=True),
    nesterov=BOOL,
)
def make_optimizer(
    name: str,
    learning_rate: float | optax.Schedule,
    *,
    momentum: float = 0.9,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
) -> optax.GradientTransformation:
    """An optax optimizer by name: ``sgd``, ``adam`` or ``adamw``.

    Args:
      name: optimizer name.
      learning_rate: a float or an optax schedule (see :func:`make_schedule`).
      momentum, nesterov: SGD momentum.
      weight_decay: coupled L2 (added to the gradient) for ``sgd``/``adam``, decoupled for
        ``adamw``.
      b1, b2, eps: Adam's moments.
    """
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    if not callable(learning_rate):  # an optax schedule is the caller's
        check_number(learning_rate, "learning_rate", low=0.0, low_open=True)
    if name == "sgd":
        opt = optax.sgd(learning_rate, momentum=momentum or None, nesterov=nesterov)
    elif name == "adam":
        opt = optax.adam(learning_rate, b1=b1, b2=b2, eps=eps)
    elif name == "adamw":
        return optax.adamw(learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay)
    else:
        raise ValueError(f"optimizer name must be 'sgd', 'adam' or 'adamw', got {name!r}")
    if weight_decay:
        return optax.chain(optax.add_decayed_weights(weight_decay), opt)
    return opt
