"""The sections every experiment config shares, with their defaults.

A config is ``seed``, ``num_devices``, ``data``, ``model``, ``train`` and ``evaluation`` (plus
an experiment's own section where it needs one); :func:`data` and :func:`train` give the
first two sections' full set of fields so that every experiment has the same schema.
"""

import ml_collections


def data(source: str, num_classes: int = 10) -> ml_collections.ConfigDict:
    """The ``data`` section: a ``load_dataset`` source and its number of classes."""
    return ml_collections.ConfigDict(dict(source=source, num_classes=num_classes))


def train(**fields) -> ml_collections.ConfigDict:
    """The ``train`` section (read by ``experiments.common.train_model``), ``fields`` overridden.

    Fields: ``optimizer`` / ``learning_rate`` / ``weight_decay`` / ``momentum`` (SGD's) /
    ``schedule`` with ``milestones`` (epochs) and ``gamma`` for ``multistep`` (see
    ``jaxgrad.training.make_optimizer`` and ``make_schedule``), ``augment`` (``"none"`` or
    ``"cifar"``: random crop with 4-pixel padding and flip), ``batch_size`` (global),
    ``epochs``, ``max_steps`` (0: every step of the epochs; n: stop after n, to try a
    full-size schedule), ``log_every`` (steps between metric rows and progress lines),
    ``checkpoint_every`` and ``keep_checkpoints`` (when the main keeps checkpoints).
    Experiments may add their own training fields (PGD, objectives, per-model overrides).
    """
    section = dict(
        optimizer="adam",
        learning_rate=1e-3,
        weight_decay=0.0,
        momentum=0.9,
        schedule="constant",
        milestones=(),
        gamma=0.1,
        augment="none",
        batch_size=64,
        epochs=1,
        max_steps=0,
        log_every=50,
        checkpoint_every=1000,
        keep_checkpoints=2,
    )
    return ml_collections.ConfigDict({**section, **fields})


def cifar_sgd(epochs: int, milestones: tuple[int, ...], **fields) -> dict:
    """The CIFAR recipe both papers' code uses, as ``train`` fields (``fields`` overridden).

    SGD 0.1 with momentum 0.9 and (coupled) weight decay 5e-4, the rate divided by 10 at each
    of ``milestones`` (epochs), batch 128, random crop (padding 4) and flip.
    """
    recipe = dict(
        optimizer="sgd",
        learning_rate=0.1,
        momentum=0.9,
        weight_decay=5e-4,
        schedule="multistep",
        milestones=tuple(milestones),
        gamma=0.1,
        augment="cifar",
        batch_size=128,
        epochs=epochs,
        log_every=100,
    )
    return {**recipe, **fields}
