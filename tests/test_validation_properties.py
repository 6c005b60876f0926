"""Property tests (hypothesis) of the shared validator and of what it promises the API.

Integers of every type are accepted and converted, bools and non-integers refused; numbers
pass exactly when finite and in range, whatever their type; a target out of range is named
when concrete and gives NaN rows (never a plausible value) under ``jit``; NaN in a map gives
a NaN Spearman for that row only.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jaxgrad import attribution as A
from jaxgrad._validation import ArgumentError, as_int, checked, number
from jaxgrad.evaluation import spearman
from jaxgrad.gradients import select_logits

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

INT_TYPES = [int, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint32]


def spell_int(v: int, how: int):
    """``v`` as one of the integer spellings a user may pass."""
    if how < len(INT_TYPES):
        t = INT_TYPES[how]
        info = np.iinfo(t) if t is not int else None
        if info is not None and not info.min <= v <= info.max:
            return int(v)
        return t(v)
    return np.asarray(v, np.int64) if how == len(INT_TYPES) else jnp.asarray(v, jnp.int32)


@SETTINGS
@given(v=st.integers(-300, 300), low=st.sampled_from([None, 0, 1, 5]),
       how=st.integers(0, len(INT_TYPES) + 1))  # fmt: skip
def test_integers_of_every_type_are_accepted_exactly_when_in_range(v, low, how):
    value = spell_int(v, how)
    if low is None or v >= low:
        out = as_int(value, "steps", low=low)
        assert type(out) is int and out == v
    else:
        with pytest.raises(ArgumentError, match="steps must be"):
            as_int(value, "steps", low=low)


@SETTINGS
@given(v=st.one_of(st.booleans(), st.floats(allow_nan=True), st.text(max_size=3), st.none()))
def test_bools_floats_strings_and_none_are_never_integers(v):
    with pytest.raises(ArgumentError, match="num_samples must be"):
        as_int(v, "num_samples", low=1)
    with pytest.raises(ArgumentError, match="num_samples must be"):
        as_int(np.asarray(v) if isinstance(v, bool | float) else v, "num_samples", low=1)


@SETTINGS
@given(v=st.floats(allow_nan=True, allow_infinity=True, width=32),
       how=st.sampled_from(["float", "np32", "np64", "jnp", "0d"]),
       bounds=st.sampled_from([(0.0, None, True), (0.0, 1.0, False), (None, None, False)]))  # fmt: skip
def test_numbers_pass_exactly_when_finite_and_in_range_whatever_their_type(v, how, bounds):
    low, high, low_open = bounds
    value = {
        "float": float(v),
        "np32": np.float32(v),
        "np64": np.float64(v),
        "jnp": jnp.float32(v),
        "0d": jnp.asarray(v, jnp.float32),
    }[how]

    @checked(sigma=number(low, high, low_open=low_open))
    def f(*, sigma):
        return sigma

    ok = np.isfinite(v)
    ok &= low is None or (v > low if low_open else v >= low)
    ok &= high is None or v <= high
    if ok:
        assert f(sigma=value) is value
    else:
        with pytest.raises(ArgumentError, match="sigma must be a finite number"):
            f(sigma=value)


def test_traced_numbers_pass_unchecked_and_static_integers_stay_hashable():
    @checked(sigma=number(0, low_open=True))
    def f(x, *, sigma):
        return x * sigma

    assert float(jax.jit(lambda s: f(2.0, sigma=s))(jnp.float32(3.0))) == 6.0

    def mlp(p, z):
        return z.reshape(z.shape[0], -1) @ p

    p = jax.random.normal(jax.random.key(0), (16, 3))
    x = jax.random.uniform(jax.random.key(1), (2, 4, 4, 1))
    ref = A.integrated_gradients(mlp, p, x, jnp.array([0, 2]), steps=4)
    for steps in (np.int64(4), jnp.array(4), np.uint8(4)):
        got = A.integrated_gradients(mlp, p, x, jnp.array([0, 2]), steps=steps)
        np.testing.assert_array_equal(np.asarray(got), np.asarray(ref))


@SETTINGS
@given(target=st.lists(st.integers(-3, 8), min_size=3, max_size=3))
def test_a_target_out_of_range_is_named_when_concrete_and_nan_under_jit(target):
    logits = jnp.arange(15.0).reshape(3, 5)
    t = jnp.asarray(target, jnp.int32)
    inside = (np.asarray(target) >= 0) & (np.asarray(target) < 5)
    if inside.all():
        np.testing.assert_array_equal(
            np.asarray(select_logits(logits, t)), np.asarray(logits)[np.arange(3), target]
        )
    else:
        with pytest.raises(ArgumentError, match=r"target must lie in \[0, 5\)"):
            select_logits(logits, t)
    traced = np.asarray(jax.jit(select_logits)(logits, t))
    assert np.isnan(traced[~inside]).all()
    rows = np.flatnonzero(inside)
    np.testing.assert_array_equal(traced[rows], np.asarray(logits)[rows, np.asarray(target)[rows]])


@SETTINGS
@given(rows=st.lists(st.booleans(), min_size=3, max_size=3), seed=st.integers(0, 2**16))
def test_spearman_is_nan_for_rows_holding_nan_and_finite_elsewhere(rows, seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(3, 4, 4, 1)).astype(np.float32)
    b = rng.normal(size=(3, 4, 4, 1)).astype(np.float32)
    for i, has_nan in enumerate(rows):
        if has_nan:
            a[i, rng.integers(4), rng.integers(4), 0] = np.nan
    rho = np.asarray(jax.jit(spearman)(a, b))  # traced: no host check, NaN must propagate
    assert np.isnan(rho[np.asarray(rows)]).all()
    assert np.isfinite(rho[~np.asarray(rows)]).all()
