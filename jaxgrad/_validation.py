"""Argument checks shared by every jaxgrad module (a leaf: imports only numpy and jax).

Shapes, dtypes and static arguments are checked with plain Python at trace time and raise
``ValueError``/``TypeError`` naming the argument; values (NaN, infinities, class indices)
only when the array is concrete, since a check inside ``jit`` would need a host sync.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np


class ArgumentError(ValueError, TypeError):
    """A bad argument: both a ``ValueError`` and a ``TypeError``, named in the message."""


def is_concrete(value) -> bool:
    """True unless ``value`` is a tracer (inside ``jit``, ``vmap`` or ``grad``)."""
    return not isinstance(value, jax.core.Tracer)


def check_number(
    value,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
):
    """Checks a scalar argument whatever its type (int, float, numpy or 0-d JAX array).

    A concrete value must be finite and within ``[low, high]`` (``low_open`` /
    ``high_open``: strict); a traced one (inside ``jit``) cannot be checked and passes.
    ``bool`` is refused. Returns ``value`` unchanged.
    """
    if isinstance(value, bool | np.bool_):
        raise ArgumentError(f"{name} must be a number, got {value!r}")
    if not is_concrete(value):
        return value
    try:
        v = np.asarray(value)
    except TypeError:
        return value  # not an array-like (a schedule, say): the caller's business
    if v.ndim != 0 or not np.issubdtype(v.dtype, np.number):
        return value
    v = float(v)
    lo = "(" if low_open else "["
    hi = ")" if high_open else "]"
    span = f"{lo}{-np.inf if low is None else low:g}, {np.inf if high is None else high:g}{hi}"
    bad = not np.isfinite(v)
    bad |= low is not None and (v <= low if low_open else v < low)
    bad |= high is not None and (v >= high if high_open else v > high)
    if bad:
        raise ArgumentError(f"{name} must be a finite number in {span}, got {v!r}")
    return value


def check_x(x, name: str = "x") -> jax.Array:
    """``x: [B, *S]`` floating point, returned as an array."""
    x = jnp.asarray(x)
    if x.ndim < 2:
        raise ArgumentError(
            f"{name} must have a batch axis and features [B, *S], got shape {x.shape}"
        )
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ArgumentError(f"{name} must be a floating-point array, got dtype {x.dtype}")
    return x


def check_finite(x, name: str = "x") -> None:
    """Rejects NaN or infinite values in a concrete floating-point ``x`` (no-op when traced)."""
    if not is_concrete(x):
        return
    arr = np.asarray(x)
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        if arr.ndim == 0:
            raise ArgumentError(f"{name} is {arr.item()}, not a finite number")
        bad = np.flatnonzero(~np.isfinite(arr.reshape(len(arr), -1)).all(axis=1))
        raise ArgumentError(
            f"{name} contains NaN or infinite values in {len(bad)} example(s), first at index {bad[0]}"
        )


def check_target(target, batch: int, num_classes: int | None = None) -> jax.Array:
    """Validates ``target: int[B]`` (or one int for every example) and returns ``int[B]``.

    Raises:
      ValueError: ``None`` (only the attribution methods take it, as the predicted class),
        a wrong shape, or (when concrete) a class outside ``[0, num_classes)``.
      TypeError: a non-integer dtype.
    """
    if target is None:
        raise ArgumentError(
            "target=None (the predicted class) is taken by the attribution methods only; "
            "here pass the classes, int[B] or one int, e.g. "
            "jnp.argmax(logit_fn(params, x), axis=-1)"
        )
    concrete = np.asarray(target) if is_concrete(target) else None
    target = jnp.asarray(target)
    if not jnp.issubdtype(target.dtype, jnp.integer):
        raise ArgumentError(f"target must be an integer array or int, got dtype {target.dtype}")
    if target.ndim == 0:  # one class for every example
        target = jnp.broadcast_to(target, (batch,))
        concrete = None if concrete is None else np.broadcast_to(concrete, (batch,))
    if target.shape != (batch,):
        raise ArgumentError(
            f"target must have shape [B] = ({batch},) or be one int, got {target.shape} "
            f"(B = {batch} is x's first axis, the batch; a single example is x[None])"
        )
    if num_classes is not None and concrete is not None and concrete.size:
        # numpy, not jnp: inside a trace even ops on concrete arrays would be staged.
        lo, hi = int(concrete.min()), int(concrete.max())
        if lo < 0 or hi >= num_classes:
            raise ArgumentError(
                f"target must lie in [0, {num_classes}), got values in [{lo}, {hi}]"
            )
    return target


def check_inputs(x, target, name: str = "x") -> tuple[jax.Array, jax.Array]:
    """Validates ``x: [B, *S]`` float and ``target: int[B]``; rejects NaN/inf in a concrete ``x``."""
    check_finite(x, name)
    x = check_x(x, name)
    return x, check_target(target, x.shape[0])


def as_int(value, name: str, *, low: int | None = None) -> int:
    """``value`` as a Python int, else an error naming ``name``.

    Any integer type (``int``, ``np.integer``, a concrete 0-d integer array) is accepted and
    ``bool`` refused; ``low`` is the smallest allowed value.
    """
    v = None
    if isinstance(value, bool | np.bool_):
        pass
    elif isinstance(value, int | np.integer):
        v = int(value)
    elif (
        is_concrete(value)
        and hasattr(value, "dtype")
        and np.ndim(value) == 0
        and np.issubdtype(value.dtype, np.integer)
    ):
        v = int(np.asarray(value))
    what = {1: "a positive integer", 0: "a non-negative integer"}.get(
        low, "an integer" if low is None else f"an integer >= {low}"
    )
    if v is None:
        kind = "a traced value (it must be static)" if not is_concrete(value) else repr(value)
        raise ArgumentError(
            f"{name} must be {what} (int, np.integer or a 0-d integer array), got {kind}"
        )
    if low is not None and v < low:
        raise ArgumentError(f"{name} must be {what}, got {v}")
    return v


def check_positive_int(value, name: str) -> int:
    """``value`` as an int >= 1 (any integer type, not ``bool``), else an error naming ``name``."""
    return as_int(value, name, low=1)


def check_chunk_size(chunk_size) -> None:
    """``chunk_size`` is None or a positive integer."""
    if chunk_size is not None:
        check_positive_int(chunk_size, "chunk_size")


def check_fractions(fractions, name: str = "fractions") -> np.ndarray:
    """A 1-D float array of fractions in ``[0, 1]`` (static: it fixes the pixel counts)."""
    f = np.asarray(fractions, dtype=np.float64)
    if f.ndim != 1 or not len(f):
        raise ArgumentError(f"{name} must be a non-empty 1-D sequence, got shape {f.shape}")
    if not np.isfinite(f).all() or f.min() < 0 or f.max() > 1:
        raise ArgumentError(f"{name} must lie in [0, 1], got values in [{f.min()}, {f.max()}]")
    return f


def check_images(x, name: str = "x", channels: int | None = None) -> None:
    """Raises at trace time unless ``x`` is a ``[B, H, W, C]`` float batch."""
    if x.ndim != 4:
        raise ArgumentError(f"{name} must have rank 4 [B, H, W, C], got shape {tuple(x.shape)}")
    if channels is not None and x.shape[-1] != channels:
        raise ArgumentError(
            f"{name} must have {channels} channel(s) in its last axis, got shape {tuple(x.shape)}"
        )
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ArgumentError(f"{name} must be a floating-point array, got dtype {x.dtype}")


def check_choice(value, choices, name: str) -> None:
    """Raises a ``ValueError`` naming ``name`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ArgumentError(f"{name} must be one of {tuple(choices)}, got {value!r}")


def broadcast_baseline(baseline, x: jax.Array) -> jax.Array:
    """A fixed baseline (``None`` = zeros, a number or an array) broadcast to ``x``'s shape."""
    if baseline is None:
        return jnp.zeros_like(x)
    check_finite(jnp.asarray(baseline)[None], "baseline")
    b = jnp.asarray(baseline, x.dtype)
    try:
        return jnp.broadcast_to(b, x.shape)
    except ValueError:
        raise ArgumentError(
            f"baseline of shape {b.shape} is not broadcastable to x's shape {x.shape}"
        ) from None


# --- declarative checks: @checked(steps=POSITIVE_INT, sigma=POSITIVE, ...) -----------------

Rule = Callable[[object, str], object]


def integer(low: int | None = None, *, optional: bool = False, traced: bool = False) -> Rule:
    """A rule: any integer type, at least ``low``; returned as a Python int.

    ``traced``: a traced integer (an index under ``jit`` or ``vmap``) passes unchecked.
    """

    def rule(value, name):
        if optional and value is None:
            return value
        if traced and not is_concrete(value):
            return value
        return as_int(value, name, low=low)

    return rule


def number(
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    optional: bool = False,
    schedule: bool = False,
) -> Rule:
    """A rule: a finite number in the range when concrete (see :func:`check_number`).

    ``schedule``: a callable (an optax schedule) passes too.
    """

    def rule(value, name):
        if optional and value is None:
            return value
        if schedule and callable(value):
            return value
        if (
            value is None
            or isinstance(value, str | bytes)
            or not (isinstance(value, int | float | np.number) or hasattr(value, "dtype"))
        ):
            what = "a number or a schedule (step -> value)" if schedule else "a number"
            raise ArgumentError(f"{name} must be {what}, got {value!r}")
        return check_number(value, name, low=low, high=high, low_open=low_open, high_open=high_open)

    return rule


def one_of(*choices, optional: bool = False) -> Rule:
    """A rule: one of ``choices`` (compared with ``==``)."""

    def rule(value, name):
        if optional and value is None:
            return value
        if not isinstance(value, str | int | type(None)) or value not in choices:
            raise ArgumentError(f"{name} must be one of {choices}, got {value!r}")
        return value

    return rule


def a_callable(*, optional: bool = False) -> Rule:
    """A rule: a function (or any callable)."""

    def rule(value, name):
        if optional and value is None:
            return value
        if not callable(value):
            raise ArgumentError(f"{name} must be callable, got {type(value).__name__} {value!r}")
        return value

    return rule


def prng_key(*, optional: bool = False) -> Rule:
    """A rule: a JAX PRNG key (``jax.random.key`` or a legacy ``uint32[2]`` key)."""

    def rule(value, name):
        if value is None:
            if optional:
                return value
            raise ArgumentError(f"{name} must be a PRNG key (jax.random.key(seed)), got None")
        dtype = getattr(value, "dtype", None)
        typed = dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)
        # legacy raw keys: uint32[..., 2] (threefry) or uint32[..., 4] (rbg, unsafe_rbg)
        legacy = dtype == jnp.uint32 and np.shape(value)[-1:] in ((2,), (4,))
        if not (typed or legacy):
            raise ArgumentError(
                f"{name} must be a PRNG key (jax.random.key(seed)), got {type(value).__name__} "
                f"{value!r}"[:200]
            )
        return value

    return rule


POSITIVE_INT = integer(1)
NONNEGATIVE_INT = integer(0)
OPTIONAL_POSITIVE_INT = integer(1, optional=True)
POSITIVE = number(0, low_open=True)
NONNEGATIVE = number(0)
FRACTION = number(0, 1)
FINITE = number()
CALLABLE = a_callable()
KEY = prng_key()
OPTIONAL_KEY = prng_key(optional=True)


def checked(**rules: Rule):
    """Checks the named arguments of every call before the function runs.

    ``@checked(steps=POSITIVE_INT, sigma=POSITIVE)`` applies each rule to the argument of
    that name when the caller passes it (defaults are trusted); a rule raises an error naming
    the argument, or returns the value to use (integers of any type become Python ints, so a
    static argument stays hashable). The wrapper keeps the function's name, docstring and
    signature.
    """

    def decorate(fn):
        sig = inspect.signature(fn)
        unknown = set(rules) - set(sig.parameters)
        if unknown:
            raise ArgumentError(
                f"@checked rules for arguments {fn.__name__} lacks: {sorted(unknown)}"
            )

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                bound = sig.bind(*args, **kwargs)
            except TypeError as e:
                raise ArgumentError(f"{fn.__qualname__}(): {e}") from None
            changed = False
            for name, rule in rules.items():
                if name in bound.arguments:
                    value = bound.arguments[name]
                    new = rule(value, name)
                    if new is not value:
                        bound.arguments[name] = new
                        changed = True
            if changed:
                return fn(*bound.args, **bound.kwargs)
            return fn(*args, **kwargs)

        return wrapper

    return decorate


def clip_range(*, optional: bool = True) -> Rule:
    """A rule: ``None`` (where allowed) or ``(low, high)`` bounds.

    Bounds are numbers or arrays, infinite ones allowed; concrete ones must hold no NaN and
    have ``low <= high``. Traced bounds pass unchecked.
    """

    def rule(value, name):
        if value is None and optional:
            return value
        try:
            lo, hi = value
        except (TypeError, ValueError):
            raise ArgumentError(f"{name} must be a (low, high) pair, got {value!r}") from None
        if not (is_concrete(lo) and is_concrete(hi)):
            return value
        try:
            lo_a, hi_a = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
        except (TypeError, ValueError):
            raise ArgumentError(
                f"{name} must be a (low, high) pair of numbers, got {value!r}"
            ) from None
        if np.isnan(lo_a).any() or np.isnan(hi_a).any() or np.any(lo_a > hi_a):
            raise ArgumentError(
                f"{name} must be (low, high) with low <= high and no NaN, got {value!r}"
            )
        return value

    return rule


CLIP = clip_range()


def check_fields(owner, **rules: Rule) -> None:
    """Applies ``rules`` to ``owner``'s attributes (a model's fields), naming ``Class.field``."""
    for name, rule in rules.items():
        rule(getattr(owner, name), f"{type(owner).__name__}.{name}")


def positive_ints(value, name):
    """A rule: a non-empty sequence of positive integers (layer widths, block counts)."""
    try:
        items = list(value)
    except TypeError:
        raise ArgumentError(
            f"{name} must be a sequence of positive integers, got {value!r}"
        ) from None
    if not items:
        raise ArgumentError(f"{name} must not be empty")
    for v in items:
        as_int(v, f"each of {name}", low=1)
    return value


def batch_array(value, name):
    """A rule: a ``[B, *S]`` floating-point array with no NaN or infinity where concrete."""
    check_finite(value, name)
    return check_x(value, name)


def linen_module(value, name):
    """A rule: a Flax Linen module (``flax.linen.Module``)."""
    import flax.linen as nn

    if not isinstance(value, nn.Module):
        raise ArgumentError(f"{name} must be a flax.linen.Module, got {type(value).__name__}")
    return value


def nnx_module(value, name):
    """A rule: a Flax NNX module (``flax.nnx.Module``)."""
    from flax import nnx

    if not isinstance(value, nnx.Module):
        raise ArgumentError(f"{name} must be a flax.nnx.Module, got {type(value).__name__}")
    return value


def variables_dict(value, name):
    """A rule: a Flax variables dict (a mapping holding ``"params"``)."""
    from collections.abc import Mapping

    if not isinstance(value, Mapping) or "params" not in value:
        raise ArgumentError(
            f"{name} must be a Flax variables dict with a 'params' collection, got "
            f"{type(value).__name__}"
        )
    return value


def optax_transform(value, name):
    """A rule: an optax ``GradientTransformation`` (anything with ``init`` and ``update``)."""
    if not (callable(getattr(value, "init", None)) and callable(getattr(value, "update", None))):
        raise ArgumentError(
            f"{name} must be an optax.GradientTransformation (e.g. optax.adam(1e-3)), got "
            f"{type(value).__name__}"
        )
    return value


def check_labels(label, num_classes: int, name: str = "data's label") -> None:
    """Refuses concrete labels outside ``[0, num_classes)``, naming the extreme one."""
    label = np.asarray(label)
    if not label.size:
        return
    lo, hi = int(label.min()), int(label.max())
    if lo < 0 or hi >= num_classes:
        bad = lo if lo < 0 else hi
        raise ArgumentError(
            f"{name} must lie in [0, {num_classes}) for a model of {num_classes} logits, "
            f"got a label {bad}"
        )


def on_every_process(check: Callable[[], object]) -> None:
    """Runs a host-level ``check`` and raises on every process if it failed on any.

    With several processes a check of host-local data (a batch, a shard's labels) could fail
    on one process only, leaving the others waiting in a collective; here they all learn of
    it (one ``process_allgather`` of a flag) and raise together.
    """
    error = None
    try:
        check()
    except (ValueError, TypeError) as e:
        error = e
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        flags = np.asarray(multihost_utils.process_allgather(np.int32(error is not None)))
        if error is None and flags.any():
            i = int(np.flatnonzero(flags)[0])
            raise ArgumentError(f"process {i} refused its share of the input (see its log)")
    if error is not None:
        raise error


def a_mesh(*, optional: bool = False) -> Rule:
    """A rule: a ``jax.sharding.Mesh`` (or None where allowed)."""

    def rule(value, name):
        if value is None and optional:
            return value
        if not isinstance(value, jax.sharding.Mesh):
            raise ArgumentError(
                f"{name} must be a jax.sharding.Mesh (jaxgrad.sharding.data_mesh()), got "
                f"{type(value).__name__}"
            )
        return value

    return rule


MESH = a_mesh()


def a_bool(value, name):
    """A rule: ``True`` or ``False`` (a string such as ``"no"`` would count as true)."""
    if not isinstance(value, bool | np.bool_):
        raise ArgumentError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def logit_function(value, name):
    """A rule: a function ``(params, x) -> logits``, not a Flax module itself."""
    kind = type(value).__module__ or ""
    if kind.startswith("flax.") or any(
        c.__module__.startswith(("flax.linen", "flax.nnx")) for c in type(value).__mro__[1:]
    ):
        raise ArgumentError(
            f"{name} must be a function (params, x) -> logits, got the module "
            f"{type(value).__name__}: wrap it with jaxgrad.models.linen_logit_fn(model) "
            "(Linen) or nnx_logit_fn(module) (NNX)"
        )
    if not callable(value):
        raise ArgumentError(f"{name} must be a function (params, x) -> logits, got {value!r}")
    return value


LOGIT_FN = logit_function
BOOL = a_bool


def train_state(value, name):
    """A rule: a ``jaxgrad.training.TrainState`` (``step``, ``params``, ``opt_state``)."""
    if not all(hasattr(value, a) for a in ("step", "params", "opt_state")):
        raise ArgumentError(
            f"{name} must be a TrainState (jaxgrad.training.create_train_state or "
            f"train_state_from), got {type(value).__name__}"
        )
    return value


def check_split(data, name: str = "data") -> None:
    """Checks a data split ``{"image": float [N, ...], "label": int [N]}`` on the host.

    Keys, lengths, dtypes and finite images (by index), before any compilation.
    """
    from collections.abc import Mapping

    if not isinstance(data, Mapping) or "image" not in data or "label" not in data:
        raise ArgumentError(
            f"{name} must be a dict {{'image': float [N, ...], 'label': int [N]}}, got "
            f"{type(data).__name__}"
            + (f" with keys {sorted(data)}" if isinstance(data, Mapping) else "")
        )
    image, label = data["image"], data["label"]
    if np.ndim(label) != 1 or np.ndim(image) < 2 or len(label) != len(image):
        raise ArgumentError(
            f"{name}'s image [N, ...] and label [N] must have one row per example, got shapes "
            f"{np.shape(image)} and {np.shape(label)}"
        )
    if not np.issubdtype(label.dtype, np.integer):
        raise ArgumentError(f"{name}'s label must be integers, got dtype {label.dtype}")
    if not np.issubdtype(image.dtype, np.floating):
        raise ArgumentError(
            f"{name}'s image must be floating point (scaled to [0, 1]: jaxgrad.data.make_dataset "
            f"divides uint8 images by 255), got dtype {image.dtype}"
        )
    check_finite(image, f"{name}'s image")
