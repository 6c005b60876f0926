"""Bad input over the whole public API: every call gets an error that names the argument.

Each public function of every public module (``__all__``) has a valid call here, and bad
inputs derived from it: automatically by argument name (a NaN ``x``, an out-of-range or
float ``target``, ``0``, ``-1``, ``True`` and ``2.5`` for an integer, NaN and ``-1`` for a
positive float, also as a 0-d array, ``"bogus"`` for a choice, a plain int for a ``key``)
and by hand for what is particular to the function. A case passes when the call raises an
error whose message names the argument (or its alias); it fails when it returns (silent),
raises an error that names something else (unclear), or runs past the time limit (hung).
Valid integers of every integer type (``np.int64``, 0-d integer arrays) must be accepted.

``python tests/test_bad_input.py`` prints the table per module (tried / named / unclear /
silent / hung) and every case that is not named.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import functools
import importlib
import inspect
import pkgutil
import re
import shutil
import signal
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxgrad
from jaxgrad import attribution as A
from jaxgrad import data as D
from jaxgrad import distillation as DI
from jaxgrad import drivers as DR
from jaxgrad import evaluation as E
from jaxgrad import gradients as G
from jaxgrad import models as M
from jaxgrad import paths as PA
from jaxgrad import score_matching as S
from jaxgrad import sharding as SH
from jaxgrad import trace_estimators as TE
from jaxgrad import training as T
from jaxgrad import types as TY
from jaxgrad import viz as VZ

B, H, W, C, K = 4, 8, 8, 1, 10
TIME_LIMIT = 120  # seconds a single call may take before it counts as hung

# --- fixtures, built once ------------------------------------------------------------------


@functools.cache
def ctx() -> dict[str, Any]:
    key = jax.random.key(0)
    x = jax.random.uniform(jax.random.key(1), (B, H, W, C))
    t = jnp.array([0, 1, 2, 3], jnp.int32)

    def mlp(params, z):  # a plain logit_fn
        h = jnp.tanh(z.reshape(z.shape[0], -1) @ params["w1"])
        return h @ params["w2"]

    p = {
        "w1": jax.random.normal(jax.random.key(2), (H * W * C, 16)) / 8,
        "w2": jax.random.normal(jax.random.key(3), (16, K)) / 4,
    }
    cnn = M.MnistCNN(features=(4, 8), dense=16)
    v = M.init_variables(cnn, jax.random.key(4), x[:1])
    tf = M.linen_logit_fn(cnn)
    per_example = lambda z: jnp.sum(jnp.sin(z.reshape(z.shape[0], -1)), -1)  # noqa: E731
    digits = D.load_digits("train")
    small = {"image": digits["image"][:64], "label": digits["label"][:64]}
    test = {"image": digits["image"][64:96], "label": digits["label"][64:96]}
    mlp_model = M.MLP(hidden=(8,))
    tx = optax.sgd(0.1)
    loss = T.classifier_loss(mlp_model)
    state = T.create_train_state(mlp_model, tx, key, small["image"][:1])
    step = T.make_train_step(loss, tx, donate=False)
    attr = G.input_gradients(mlp, p, x, t)
    return dict(
        key=key, x=x, t=t, f=mlp, p=p, cnn=cnn, v=v, tf=tf, g=per_example, data=small,
        test=test, model=mlp_model, tx=tx, loss=loss, state=state, step=step, a=attr,
        logits=mlp(p, x), tmp=_tmp(),
    )  # fmt: skip


def _tmp() -> Path:
    tmp = Path(tempfile.mkdtemp(prefix="jaxgrad-bad-input-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    return tmp


# --- what counts as bad, by argument name --------------------------------------------------

NAN = float("nan")
POSITIVE_INTS = {
    "steps", "num_samples", "num_probes", "num_runs", "num_steps", "num_baselines",
    "patch_size", "subset_size", "chunk_size", "batch_size", "epochs", "max_iter",
    "num_train", "num_classes", "save_every", "keep", "total_steps",
    "num_examples", "dim", "keep_checkpoints", "checkpoint_every", "count",
}  # fmt: skip
NONNEGATIVE_INTS = {"padding", "warmup_steps", "seed", "start_step", "epoch", "max_steps"}
POSITIVE_FLOATS = {
    "sigma", "step_size", "radius", "noise_scale", "epsilon",
    "temperature", "max_sigma", "grad_step", "stddev", "data_range", "tol", "learning_rate",
    "truncate", "beta", "bn_epsilon", "stale_after",
}  # fmt: skip
NONNEGATIVE_FLOATS = {
    "noise", "weight_decay", "lam", "mu", "tau", "k1", "k2", "imputation_noise", "noise_level",
    "max_dist",
}  # fmt: skip
UNIT_FLOATS = {"fraction", "p_top", "bias_prob", "momentum", "gamma"}
CHOICES = {
    "rule", "statistic", "mode", "order", "aggregate", "fill", "distribution", "product",
    "kind", "norm", "variant", "postprocess", "output", "reduce", "unit", "ties",
    "imputation", "perturbation", "optimizer", "schedule", "split", "name",
}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Case:
    """One call: ``fn(**kwargs)`` with ``arg`` set to a bad (or, if ``valid``, good) value."""

    module: str
    function: str
    arg: str
    what: str
    call: Callable[[], Any]
    names: tuple[str, ...]
    valid: bool = False
    nan_ok: bool = False  # a NaN input: an output with NaN where it went is acceptable

    @property
    def id(self) -> str:
        return f"{self.function}[{self.arg}={self.what}]"


def auto_bad(arg: str, good: Any, c: dict, required: bool) -> list[tuple[str, Any]]:
    """The bad values every function gets for an argument called ``arg``."""
    out: list[tuple[str, Any]] = []
    if arg in POSITIVE_INTS or arg in NONNEGATIVE_INTS:
        if arg in POSITIVE_INTS:
            out.append(("0", 0))
        out += [("-1", -1), ("True", True), ("2.5", 2.5)]
    elif arg in POSITIVE_FLOATS | NONNEGATIVE_FLOATS | UNIT_FLOATS:
        out += [("nan", NAN), ("array(nan)", jnp.array(NAN)), ("-1", -1.0)]
        if arg in UNIT_FLOATS:
            out.append(("1.5", 1.5))
        if arg in POSITIVE_FLOATS:
            out.append(("array(0)", jnp.array(0.0)))
    elif arg in CHOICES and isinstance(good, str):
        out.append(("bogus", "bogus"))
    elif arg == "key" and good is not None:
        out += [("int", 0)] + ([("None", None)] if required else [])
    elif arg in ("x", "sample_x") and hasattr(good, "ndim") and good.ndim >= 2:
        out += [
            ("nan", jnp.asarray(good).at[-1].set(NAN)),
            ("int", jnp.asarray(good).astype(jnp.int32)),
            ("unbatched", jnp.asarray(good)[0].reshape(-1)),
        ]
    elif arg == "target" and good is not None and not callable(good):
        n = c["x"].shape[0]
        out += [
            ("out-of-range", jnp.full((n,), K, jnp.int32)),
            ("negative", jnp.full((n,), -1, jnp.int32)),
            ("float", jnp.zeros((n,), jnp.float32)),
            ("wrong-shape", jnp.zeros((n + 1,), jnp.int32)),
        ]
    elif arg == "attribution" and hasattr(good, "shape"):
        out += [
            ("wrong-shape", jnp.asarray(good)[..., :2, :]),
            ("nan", jnp.asarray(good).at[0].set(NAN)),
        ]
    elif arg == "baseline" and hasattr(good, "shape"):
        out += [("wrong-shape", jnp.zeros((3, 5)))]
    return out


def auto_valid(arg: str, good: Any) -> list[tuple[str, Any]]:
    """Other spellings of a valid value: any integer or float type, a legacy raw key."""
    if arg in POSITIVE_INTS | NONNEGATIVE_INTS and type(good) is int:
        return [("np.int64", np.int64(good)), ("array", jnp.array(good))]
    if arg in POSITIVE_FLOATS | NONNEGATIVE_FLOATS | UNIT_FLOATS and type(good) is float:
        return [("np.float32", np.float32(good)), ("array", jnp.float32(good))]
    if arg == "key" and good is not None and hasattr(good, "dtype"):
        return [("PRNGKey", jax.random.PRNGKey(0))]
    return []


@dataclasses.dataclass
class Spec:
    """A public function's valid call and its hand-written bad inputs."""

    fn: Callable
    good: Callable[[dict], dict]  # ctx -> keyword arguments of a valid call
    bad: Callable[[dict], list] = lambda c: []  # ctx -> [(arg, what, value[, names])]
    auto: tuple[str, ...] | None = None  # arguments to mutate automatically (None: all given)
    skip_auto: tuple[str, ...] = ()
    name: str | None = None
    zero_ok: tuple[str, ...] = ()  # arguments the auto table deems positive where 0 is valid
    runs_offline: bool = True  # False: the valid call needs a prepared data set
    propagates: bool = True  # False: a host-level entry point, which must reject NaN input


PGD_BAD = [("steps", "-1", -1), ("steps", "True", True), ("steps", "2.5", 2.5),
           ("epsilon", "nan", NAN), ("epsilon", "-1", -1.0)]  # fmt: skip


def digits_like(c, **change):
    d = dict(c["data"])
    d.update(change)
    return d


def specs() -> list[Spec]:  # noqa: PLR0915 (one table)
    lit = lambda c: dict(logit_fn=c["f"], params=c["p"], x=c["x"], target=c["t"])  # noqa: E731
    tap = lambda c: dict(logit_fn=c["tf"], params=c["v"], x=c["x"], target=c["t"])  # noqa: E731
    metr = lambda c: dict(lit(c), attribution=c["a"])  # noqa: E731
    return [
        # --- jaxgrad.gradients ---
        Spec(G.input_gradients, lit),
        Spec(G.log_density, lit),
        Spec(G.score, lit),
        Spec(G.select_logits, lambda c: dict(logits=c["logits"], target=c["t"]),
             lambda c: [("target", "out-of-range", jnp.full((B,), K)),
                        ("target", "float", jnp.zeros((B,))),
                        ("logits", "rank-1", c["logits"][0])]),
        Spec(G.cosine_similarity, lambda c: dict(a=c["x"], b=c["x"] + 1.0),
             lambda c: [("b", "wrong-shape", c["x"][:2]), ("eps", "-1", -1.0),
                        ("eps", "nan", NAN)]),
        Spec(G.hvp, lambda c: dict(f=c["g"], x=c["x"], v=c["x"]),
             lambda c: [("v", "wrong-shape", c["x"][:, :2]), ("f", "not-callable", 3)]),
        Spec(G.shift_logits, lambda c: dict(logit_fn=c["f"], g=lambda z: jnp.sum(z)),
             lambda c: [("g", "not-callable", 3), ("logit_fn", "not-callable", 3)]),
        Spec(G.shift_to_target_map, lambda c: dict(logit_fn=c["f"], target_class=1,
                                                   target_map=c["x"][0]),
             lambda c: [("target_class", "-1", -1), ("target_class", "True", True),
                        ("target_class", "2.5", 2.5),
                        ("target_map", "nan", c["x"][0].at[0].set(NAN))]),
        Spec(G.gradient_manipulation_loss,
             lambda c: dict(lit(c), target_map=c["x"]),
             lambda c: [("target_map", "wrong-shape", c["x"][:, :2]),
                        ("alpha", "nan", NAN), ("alpha", "-1", -1.0)]),
        # --- jaxgrad.trace_estimators ---
        Spec(TE.hessian_trace_exact, lambda c: dict(f=c["g"], x=c["x"])),
        Spec(TE.hessian_trace_hutchinson, lambda c: dict(f=c["g"], x=c["x"], key=c["key"],
                                                          num_probes=2, distribution="rademacher",
                                                          product="jvp", chunk_size=1)),
        Spec(TE.hessian_trace_taylor, lambda c: dict(f=c["g"], x=c["x"], key=c["key"],
                                                      sigma=0.01, num_samples=2, chunk_size=1)),
        Spec(TE.hessian_trace, lambda c: dict(lit(c), key=c["key"])),
        # --- jaxgrad.score_matching ---
        Spec(S.score_matching_loss, lambda c: dict(f=c["g"], x=c["x"], key=c["key"])),
        Spec(S.anti_score_matching_loss, lambda c: dict(trace=jnp.ones(B), tau=10.0),
             lambda c: [("trace", "nan", jnp.ones(B).at[0].set(NAN))]),
        Spec(S.stability_regularizer, lambda c: dict(trace=jnp.ones(B)),
             lambda c: [("trace", "nan", jnp.ones(B).at[0].set(NAN)),
                        ("trace", "rank-2", jnp.ones((B, 2)))]),
        Spec(S.gradient_norm_regularizer, lambda c: dict(f=c["g"], x=c["x"])),
        Spec(S.make_regularizer, lambda c: dict(kind="score_matching", lam=1e-3, mu=1e-3)),
        Spec(S.regularizer, lambda c: dict(lit(c), kind="score_matching", key=c["key"],
                                           mu=1e-3, tau=10.0),
             lambda c: [("forward", "tuple", (c["logits"], lambda ct: (ct,))),
                        ("forward", "wrong-batch",
                         S.logits_with_vjp(c["f"], c["p"], c["x"][:2])[0])]),
        Spec(S.logits_with_vjp, lambda c: dict(logit_fn=c["f"], params=c["p"], x=c["x"],
                                               has_aux=False, double_backprop=True),
             lambda c: [("logit_fn", "per-example", lambda p, z: c["f"](p, z)[:, 0]),
                        ("has_aux", "no-aux", True, ("has_aux", "logit_fn"))]),

        Spec(S.regularized_loss, lambda c: dict(lit(c), kind="score_matching", key=c["key"],
                                                lam=1e-3, mu=1e-3)),
        Spec(S.regularized_loss_with_aux,
             lambda c: dict(lit(c), logit_fn=lambda p, z: (c["f"](p, z), {}),
                            kind="gradient_norm", lam=1e-3)),
        # --- jaxgrad.distillation ---
        Spec(DI.distillation_loss,
             lambda c: dict(student_logits=c["logits"], teacher_logits=c["logits"] * 2,
                            kind="kl", temperature=2.0),
             lambda c: [("teacher_logits", "wrong-shape", c["logits"][:2])]),
        Spec(DI.jacobian_matching_loss,
             lambda c: dict(student_logit_fn=c["f"], student_params=c["p"],
                            teacher_logit_fn=c["f"], teacher_params=c["p"], x=c["x"],
                            target=c["t"], output="target")),
        Spec(DI.noisy_distillation_loss,
             lambda c: dict(student_logit_fn=c["f"], student_params=c["p"],
                            teacher_logit_fn=c["f"], teacher_params=c["p"], x=c["x"],
                            key=c["key"], sigma=0.1, num_samples=2, chunk_size=1)),
        # --- jaxgrad.attribution ---
        Spec(A.gradient, lambda c: dict(lit(c), postprocess="abs")),
        Spec(A.gradient_x_input, lit),
        Spec(A.integrated_gradients, lambda c: dict(lit(c), steps=4, chunk_size=2,
                                                    rule="gauss_legendre", num_baselines=1,
                                                    baseline=jnp.zeros_like(c["x"]))),
        Spec(A.completeness_delta, lambda c: dict(metr(c), baseline=jnp.zeros_like(c["x"]))),
        Spec(A.smoothgrad, lambda c: dict(lit(c), key=c["key"], noise_level=0.1,
                                          num_samples=2, statistic="mean", chunk_size=1)),
        Spec(A.expected_gradients, lambda c: dict(lit(c), key=c["key"], references=c["x"],
                                                  num_samples=2, chunk_size=1),
             lambda c: [("references", "wrong-shape", c["x"][..., :2, :]),
                        ("references", "nan", c["x"].at[0].set(NAN))]),
        Spec(A.blur_integrated_gradients, lambda c: dict(lit(c), steps=4, max_sigma=2.0,
                                                          grad_step=0.01, truncate=4.0,
                                                          chunk_size=2)),
        Spec(A.guided_integrated_gradients, lambda c: dict(lit(c), steps=4, fraction=0.25,
                                                            max_dist=0.02)),
        Spec(A.fullgrad, tap),
        Spec(A.fullgrad_decomposition, tap),
        Spec(A.completeness_gap,
             lambda c: dict(decomposition=A.fullgrad_decomposition(c["tf"], c["v"], c["x"], c["t"]),
                            x=c["x"], logits=c["tf"](c["v"], c["x"]), target=c["t"]),
             lambda c: [("logits", "wrong-shape", c["logits"][:2]),
                        ("x", "wrong-shape", c["x"][:, :2])]),
        Spec(A.gradcam, lambda c: dict(tap(c), layer="hidden2_act", variant="gradcam"),
             lambda c: [("layer", "unknown", "nope"), ("logit_fn", "untapped", c["f"])]),
        Spec(A.gradcam_layer_map, lambda c: dict(tap(c), layer="hidden2_act")),
        Spec(A.guided_backprop, tap,
             lambda c: [("logit_fn", "untapped", c["f"])]),
        Spec(A.guided, lambda c: dict(activation=jax.nn.relu),
             lambda c: [("activation", "not-callable", 3)]),
        Spec(A.quadrature, lambda c: dict(rule="gauss_legendre", steps=4)),
        # --- jaxgrad.evaluation ---
        Spec(E.pixel_perturbation, lambda c: dict(metr(c), fractions=(0.0, 0.5), order="least",
                                                  aggregate="abs_sum", fill="constant")),
        Spec(E.deletion_insertion, lambda c: dict(metr(c), mode="deletion", num_steps=4)),
        Spec(E.infidelity, lambda c: dict(metr(c), key=c["key"], num_samples=2,
                                          perturbation="gaussian", noise_scale=0.01)),
        Spec(E.faithfulness_correlation, lambda c: dict(metr(c), key=c["key"], num_runs=3,
                                                        subset_size=4)),
        Spec(E.sensitivity, lambda c: dict(lit(c), key=c["key"], method=A.gradient,
                                           radius=0.02, num_samples=2, reduce="max")),
        Spec(E.road, lambda c: dict(metr(c), key=c["key"], fractions=(0.5,), noise=0.01)),
        Spec(E.noisy_linear_imputation,
             lambda c: dict(x=c["x"], mask=jnp.zeros((B, H, W), bool).at[:, 2, 2].set(True),
                            key=c["key"], noise=0.01, tol=1e-6, max_iter=50),
             lambda c: [("mask", "float", jnp.zeros((B, H, W))),
                        ("mask", "wrong-shape", jnp.zeros((B, 3, 3), bool))]),
        Spec(E.mask_images, lambda c: dict(x=c["x"], attribution=c["a"], fraction=0.5,
                                           order="most", aggregate="abs_sum", ties="stable"),
             lambda c: [("fraction", "1.5", 1.5), ("fraction", "nan", NAN),
                        ("attribution", "wrong-shape", c["a"][:, :2])]),
        Spec(E.pixel_salience, lambda c: dict(attribution=c["a"], aggregate="abs_sum"),
             lambda c: [("attribution", "rank-2", c["a"].reshape(B, -1))],
             skip_auto=("attribution",)),
        Spec(E.removal_ranks, lambda c: dict(salience=jnp.ones((B, H, W)), order="most"),
             lambda c: [("salience", "nan", jnp.ones((B, H, W)).at[0].set(NAN)),
                        ("ties", "bogus", "bogus"),
                        ("ties", "random-without-key", "random", ("key",))],
             skip_auto=("key",)),
        Spec(E.area_under_curve, lambda c: dict(fractions=jnp.array([0.0, 0.5, 1.0]),
                                                values=jnp.ones((3, B))),
             lambda c: [("values", "wrong-length", jnp.ones((2, B))),
                        ("values", "nan", jnp.ones((3, B)).at[0].set(NAN)),
                        ("fractions", "unsorted", jnp.array([0.5, 0.0, 1.0]))]),
        Spec(E.block_localization,
             lambda c: dict(attribution=c["a"], signal_mask=jnp.ones((B, H, W), bool),
                            top_k=0.05),
             lambda c: [("top_k", "0", 0), ("top_k", "1.5", 1.5), ("top_k", "nan", NAN),
                        ("signal_mask", "wrong-shape", jnp.ones((B, 2), bool))]),
        Spec(E.spearman, lambda c: dict(a=c["a"], b=c["x"]),
             lambda c: [("a", "nan", c["a"].at[0].set(NAN)), ("b", "wrong-shape", c["x"][:2]),
                        ("mask", "wrong-shape", jnp.ones((2,), bool))]),
        Spec(E.spearman_abs, lambda c: dict(a=c["a"], b=c["x"]),
             lambda c: [("a", "nan", c["a"].at[0].set(NAN)), ("b", "wrong-shape", c["x"][:2])]),
        Spec(E.spearman_nz, lambda c: dict(a=c["a"], b=c["x"], x=c["x"]),
             lambda c: [("a", "nan", c["a"].at[0].set(NAN)), ("b", "wrong-shape", c["x"][:2]),
                        ("x", "wrong-shape", c["x"][:2])],
             skip_auto=("x",)),
        Spec(E.rankdata_average, lambda c: dict(a=c["a"].reshape(B, -1)),
             lambda c: [("a", "nan", c["a"].reshape(B, -1).at[0].set(NAN)),
                        ("mask", "wrong-shape", jnp.ones((2,), bool))]),
        Spec(E.ssim, lambda c: dict(a=c["x"], b=c["x"] * 0.5, data_range=1.0, sigma=0.5),
             lambda c: [("b", "wrong-shape", c["x"][:2]),
                        ("a", "too-small", jnp.ones((B, 4, 4, C)), ("a", "sigma", "small")),
                        ("k1", "nan", NAN)]),
        Spec(E.hog_similarity,
             lambda c: dict(a=np.asarray(c["x"]), b=np.asarray(c["x"]), pixels_per_cell=(4, 4)),
             lambda c: [("pixels_per_cell", "0", (0, 4)),
                        ("b", "wrong-shape", np.asarray(c["x"][:2])),
                        ("a", "nan", np.asarray(c["x"]) * NAN)]),
        Spec(E.langevin_sample, lambda c: dict(lit(c), key=c["key"], step_size=0.01, steps=3),
             lambda c: [("noise_scale", "nan", NAN), ("noise_scale", "-1", -1.0)],
             skip_auto=("noise_scale",)),
        Spec(E.gradient_ascent, lambda c: dict(lit(c), step_size=0.01, steps=3),
             lambda c: [("clip", "reversed", (1.0, 0.0)), ("weight_decay", "nan", NAN)]),
        Spec(E.density_ratio_profile, lambda c: dict(lit(c), key=c["key"], sigmas=(0.1,),
                                                     num_samples=2, chunk_size=1),
             lambda c: [("sigmas", "negative", (-0.1,)), ("sigmas", "nan", (NAN,))]),
        Spec(E.gan_test_accuracy, lit),
        Spec(E.randomization_stages, lambda c: dict(params=c["v"], key=c["key"], mode="cascading",
                                                    stddev=0.01),
             lambda c: [("layers", "unknown", ["nope"])]),
        Spec(E.layer_names, lambda c: dict(variables=c["v"]),
             lambda c: [("variables", "not-a-tree", 3)]),
        Spec(E.leaf_paths, lambda c: dict(tree=c["v"]), lambda c: []),
        Spec(E.tree_layers, lambda c: dict(tree=c["v"]), lambda c: []),
        # --- jaxgrad.drivers ---
        Spec(DR.attribute_dataset,
             lambda c: dict(method=A.gradient, logit_fn=c["f"], params=c["p"],
                            batches=list(D.eval_batches(c["test"], 8))),
             lambda c: [("method", "not-callable", 3),
                        ("target_from", "unknown", "nope"),
                        ("batches", "nan", [{"image": np.full((2, H, W, C), NAN, np.float32),
                                             "label": np.zeros(2, np.int32)}],
                         ("batch", "image", "x")),
                        ("batches", "label-out-of-range",
                         [{"image": np.zeros((2, H, W, C), np.float32),
                           "label": np.full(2, K, np.int32)}], ("target", "label"))]),
        Spec(DR.keep_ranked, lambda c: dict(x=c["x"], attribution=c["a"], fill_value=0.0,
                                            count=4, order="least"),
             lambda c: [("count", "too-many", H * W + 1), ("count", "-1", -1),
                        ("count", "True", True), ("count", "2.5", 2.5)],
             skip_auto=("count",)),
        Spec(DR.roar,
             lambda c: dict(train=c["data"], test=c["test"],
                            train_attribution=np.ones_like(c["data"]["image"]),
                            test_attribution=np.ones_like(c["test"]["image"]),
                            retrain=lambda tr, te, k: 0.5, key=c["key"], fractions=(0.5,)),
             lambda c: [("fractions", "1.5", (1.5,)),
                        ("train_attribution", "wrong-shape", np.ones((3, 2))),
                        ("retrain", "not-callable", 3)]),
        Spec(DR.make_retrainer, lambda c: dict(model_factory=lambda: c["model"], epochs=1,
                                               batch_size=8, learning_rate=0.1,
                                               optimizer="sgd", schedule="constant")),
        Spec(DR.sanity_table,
             lambda c: dict(methods={"gradient": A.gradient}, logit_fn=c["f"],
                            stages=[("trained", c["p"])], x=c["x"], target=c["t"]),
             lambda c: [("stages", "empty", []), ("methods", "empty", {})]),
        Spec(DR.mean_ci99, lambda c: dict(values=np.ones(5)),
             # (NaN values are left out by design, and counted: Spearman is NaN for a
             # constant map, and each row reports n, the finite values)
             lambda c: [("values", "empty", np.ones(0))]),
        Spec(DR.default_metrics, lambda c: dict(x=c["x"]),
             lambda c: [("x", "nan", c["x"].at[0].set(NAN))]),
        # --- jaxgrad.data ---
        Spec(D.load_digits, lambda c: dict(split="train")),
        Spec(D.load_dataset, lambda c: dict(source="digits", split="test"),
             lambda c: [("source", "unknown", "nope"), ("shard", "out-of-range", (2, 2)),
                        ("source", "unprepared-tfds", "tfds:no_such_dataset",
                         ("tfds:no_such_dataset",))]),
        Spec(D.source_shape, lambda c: dict(source="digits", split="train"),
             lambda c: [("source", "unknown", "nope")]),
        Spec(D.load_idx, lambda c: dict(folder=_idx_folder(c["tmp"]), split="test", num_train=6),
             lambda c: [("folder", "missing", c["tmp"] / "no-such-folder", ("IDX", "folder"))],
             auto=()),
        Spec(D.read_idx, lambda c: dict(path=_idx_folder(c["tmp"]) / "t10k-labels-idx1-ubyte"),
             lambda c: [("path", "missing", c["tmp"] / "nope.idx", ("IDX",)),
                        ("path", "garbage", _garbage(c["tmp"]), ("IDX",))], auto=()),
        Spec(D.load_tfds, lambda c: dict(name="mnist"),
             lambda c: [("name", "unprepared", "no_such_dataset", ("no_such_dataset",)),
                        ("shard", "out-of-range", (3, 2))], auto=(), runs_offline=False),
        Spec(D.make_dataset,
             lambda c: dict(image=c["data"]["image"], label=c["data"]["label"], name="mine",
                            num_classes=10),
             lambda c: [("label", "out-of-range", c["data"]["label"] + 10),
                        ("image", "nan", c["data"]["image"] * NAN),
                        ("label", "float", c["data"]["label"].astype(np.float32))],
             skip_auto=("name",)),
        Spec(D.validate_dataset, lambda c: dict(data=c["data"], name="mine", num_classes=10),
             lambda c: [("data", "missing-label", {"image": c["data"]["image"]}, ("label",)),
                        ("data", "pixels>1", digits_like(c, image=c["data"]["image"] * 2),
                         ("image",))],
             skip_auto=("name",)),
        Spec(D.make_block_mnist, lambda c: dict(data=c["data"], seed=0, p_top=0.5),
             lambda c: [("data", "rank-3", {"image": c["data"]["image"][..., 0],
                                            "label": c["data"]["label"]}, ("image",))]),
        Spec(D.signal_mask, lambda c: dict(signal_top=np.array([True, False]),
                                           image_shape=(56, 28, 1)),
             lambda c: [("image_shape", "odd", (55, 28, 1)),
                        ("signal_top", "int", np.array([2, 3]))]),
        Spec(D.make_signal_coordinate, lambda c: dict(num_examples=8, dim=10, bias_prob=0.1)),
        Spec(D.batches, lambda c: dict(data=c["data"], key=c["key"], batch_size=8, num_steps=2),
             lambda c: [("process_index", "out-of-range", 2),
                        ("process_count", "0", 0)], zero_ok=("num_steps",)),
        Spec(D.eval_batches, lambda c: dict(data=c["data"], batch_size=8),
             lambda c: [("process_index", "out-of-range", 2)]),
        Spec(D.get_batch, lambda c: dict(data=c["data"], step=0, key=c["key"], batch_size=8),
             lambda c: [("step", "-1", -1), ("step", "True", True)]),
        Spec(D.epoch_order, lambda c: dict(key=c["key"], epoch=0, num_examples=8)),
        Spec(D.steps_per_epoch, lambda c: dict(num_examples=64, batch_size=8)),
        Spec(D.shard_indices, lambda c: dict(num_examples=64, index=0, count=2),
             lambda c: [("index", "out-of-range", 2), ("index", "-1", -1), ("count", "0", 0),
                        ("index", "True", True)]),
        Spec(D.host_shard, lambda c: dict(data=c["data"], index=0, count=2),
             lambda c: [("index", "out-of-range", 2), ("count", "0", 0)]),
        Spec(D.random_flip, lambda c: dict(key=c["key"], images=c["x"]),
             lambda c: [("images", "rank-2", c["x"].reshape(B, -1))]),
        Spec(D.random_crop, lambda c: dict(key=c["key"], images=c["x"], padding=2),
             lambda c: [("images", "rank-2", c["x"].reshape(B, -1))]),
        Spec(D.crop_augment, lambda c: dict(key=c["key"], images=c["x"], padding=2)),
        Spec(D.cifar_augment, lambda c: dict(key=c["key"], images=c["x"], padding=2)),
        Spec(D.get_augmentation, lambda c: dict(name="crop")),
        # --- jaxgrad.models ---
        Spec(M.get_model, lambda c: dict(name="mlp", hidden=(8,)),
             lambda c: [("hidden", "unknown-kwarg", None, ("hidden", "bogus"))], auto=("name",)),
        Spec(M.get_activation, lambda c: dict(activation="softplus", beta=2.0),
             lambda c: [("activation", "unknown", "bogus")]),
        Spec(M.softplus, lambda c: dict(x=c["x"], beta=2.0), skip_auto=("x",)),
        Spec(M.max_pool_2x2, lambda c: dict(x=c["x"]),
             lambda c: [("x", "rank-2", jnp.ones((B, 4)))],
             auto=()),
        Spec(M.tiled_max_pool, lambda c: dict(x=c["x"], window=(1, 2, 2, 1)),
             lambda c: [("window", "wrong-rank", (2, 2)), ("window", "0", (1, 0, 2, 1))],
             auto=()),
        Spec(M.conv_general_dilated,
             lambda c: dict(lhs=c["x"], rhs=jnp.ones((3, 3, C, 2)), window_strides=(1, 1),
                            padding="SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")),
             lambda c: [("rhs", "wrong-channels", jnp.ones((3, 3, C + 1, 2)),
                         ("rhs", "feature", "channel", "lhs")),
                        ("window_strides", "0", (0, 1))]),
        Spec(M.fast_logit_fn, lambda c: dict(logit_fn=c["f"]),
             lambda c: [("logit_fn", "not-callable", 3)]),
        Spec(M.init_variables, lambda c: dict(model=c["cnn"], key=c["key"], sample_x=c["x"][:1])),
        Spec(M.linen_logit_fn, lambda c: dict(model=c["cnn"]),
             lambda c: [("model", "not-a-module", 3), ("bn_epsilon", "-1", -1.0)]),
        Spec(M.nnx_logit_fn, lambda c: dict(module=_nnx_module()),
             lambda c: [("module", "not-a-module", 3)]),
        Spec(M.nnx_train_logit_fn, lambda c: dict(module=_nnx_module()),
             lambda c: [("module", "not-a-module", 3)]),
        Spec(M.zero_perturbations, lambda c: dict(model=c["cnn"], variables=c["v"],
                                                  sample_x=c["x"][:1])),
        Spec(M.module_biases, lambda c: dict(variables=c["v"]),
             lambda c: [("variables", "not-a-tree", 3)]),
        Spec(M.nnx_biases, lambda c: dict(module=_nnx_module()),
             lambda c: [("module", "not-a-module", 3)]),
        Spec(M.tap_shapes, lambda c: dict(logit_fn=c["tf"], params=c["v"], x=c["x"]),
             lambda c: [("logit_fn", "untapped", c["f"])], skip_auto=("x",)),
        Spec(M.hooked_logit_fn, lambda c: dict(fn=lambda p, z, tap: c["f"](p, z)),
             lambda c: [("fn", "not-callable", 3)]),
        Spec(M.identity_tap, lambda c: dict(name="a", value=c["x"]), auto=()),
        Spec(M.truncated_normal_fan_in, lambda c: dict(scale=2.0),
             lambda c: [("scale", "-1", -1.0), ("scale", "nan", NAN)]),
        Spec(lambda **kw: M.MLP(**kw).init(jax.random.key(0), jnp.ones((1, H, W, C))),
             lambda c: dict(num_classes=10, hidden=(8,), activation="relu"),
             lambda c: [("hidden", "0", (0,)), ("activation", "bogus", "bogus"),
                        ("beta", "-1", -1.0)], name="MLP"),
        Spec(lambda **kw: M.MnistCNN(**kw).init(jax.random.key(0), jnp.ones((1, H, W, C))),
             lambda c: dict(num_classes=10, features=(4, 8), dense=16),
             lambda c: [("features", "0", (0, 8)), ("dense", "0", 0),
                        ("activation", "bogus", "bogus")], name="MnistCNN"),
        Spec(lambda **kw: M.ResNet(**kw).init(jax.random.key(0), jnp.ones((1, H, W, 3))),
             lambda c: dict(num_classes=10, stage_sizes=(1,), widths=(4,)),
             lambda c: [("block", "bogus", "bogus"), ("stage_sizes", "mismatch", (1, 1)),
                        ("activation", "bogus", "bogus")], name="ResNet"),
        Spec(lambda **kw: M.VGG(**kw).init(jax.random.key(0), jnp.ones((1, H, W, 3))),
             lambda c: dict(num_classes=10, layers=(4, "M")),
             lambda c: [("layers", "bogus", (4, "X")), ("layers", "0", (0, "M"))], name="VGG"),
        # --- jaxgrad.sharding, jaxgrad.viz, jaxgrad.paths, jaxgrad.types ---
        Spec(SH.initialize_distributed, lambda c: dict(),
             lambda c: [("num_processes", "0", 0), ("process_id", "-1", -1),
                        ], auto=()),
        Spec(SH.data_mesh, lambda c: dict(), lambda c: [("devices", "empty", [])]),
        Spec(SH.global_batch_size, lambda c: dict(batch_size=6, mesh=SH.data_mesh()),
             lambda c: [("mesh", "not-a-mesh", 3)]),
        Spec(SH.batch_sharding, lambda c: dict(mesh=SH.data_mesh()),
             lambda c: [("mesh", "not-a-mesh", 3)]),
        Spec(SH.replicated, lambda c: dict(mesh=SH.data_mesh()),
             lambda c: [("mesh", "not-a-mesh", 3)]),
        Spec(SH.shard_batch, lambda c: dict(batch={"x": np.ones((len(jax.devices()), 2))},
                                           mesh=SH.data_mesh()),
             lambda c: [("mesh", "not-a-mesh", 3)] + (
                 [("batch", "indivisible", {"x": np.ones((len(jax.devices()) + 1, 2))})]
                 if len(jax.devices()) > 1 else []  # (one device divides every batch)
             )),
        Spec(SH.replicate, lambda c: dict(tree={"w": np.ones(2)}, mesh=SH.data_mesh()),
             lambda c: [("mesh", "not-a-mesh", 3)]),
        # (one map [H, W] or [H, W, C] each: a "wrong shape" is another valid map)
        Spec(VZ.normalize_signed, lambda c: dict(attribution=np.asarray(c["a"][0])),
             lambda c: [("clip_percentile", "0", 0.0), ("clip_percentile", "101", 101.0),
                        ("clip_percentile", "nan", NAN), *_viz_bad(c)],
             skip_auto=("attribution",), propagates=False),
        Spec(VZ.signed_rgb, lambda c: dict(attribution=np.asarray(c["a"][0, ..., 0])),
             lambda c: [("clip_percentile", "0", 0.0), ("clip_percentile", "nan", NAN),
                        *_viz_bad(c)], skip_auto=("attribution",), propagates=False),
        Spec(VZ.absolute_map, lambda c: dict(attribution=np.asarray(c["a"][0, ..., 0])),
             lambda c: [("clip_percentile", "101", 101.0), *_viz_bad(c)],
             skip_auto=("attribution",), propagates=False),
        Spec(VZ.overlay, lambda c: dict(image=np.asarray(c["x"][0]),
                                        attribution=np.asarray(c["a"][0, ..., 0])),
             lambda c: [("alpha", "1.5", 1.5), ("alpha", "nan", NAN), *_viz_bad(c)],
             skip_auto=("attribution",), propagates=False),
        Spec(VZ.attribution_grid,
             lambda c: dict(images=np.asarray(c["x"]), attributions=[np.asarray(c["a"])]),
             lambda c: [("attributions", "wrong-count", [np.asarray(c["a"][:2])],
                         ("attributions", "images"))]),
        Spec(PA.is_remote, lambda c: dict(path="gs://bucket/x"),
             lambda c: [("path", "int", 3)]),
        Spec(PA.as_path, lambda c: dict(path="runs/x"), lambda c: [("path", "int", 3)]),
        Spec(TY.require_tapped, lambda c: dict(logit_fn=c["tf"], caller="gradcam"),
             lambda c: [("logit_fn", "untapped", c["f"], ("logit_fn", "TappedLogitFn", "taps"))]),
        # --- jaxgrad.training ---
        Spec(T.cross_entropy, lambda c: dict(logits=c["logits"], target=c["t"]),
             lambda c: [("target", "out-of-range", jnp.full((B,), K)),
                        ("target", "float", jnp.zeros((B,)))]),
        Spec(T.masked_mean, lambda c: dict(values=jnp.ones(B), mask=jnp.ones(B, bool)),
             lambda c: [("mask", "wrong-shape", jnp.ones(2, bool))]),
        Spec(T.classifier_loss, lambda c: dict(model=c["model"]),
             lambda c: [("per_example_loss", "not-callable", 3)]),
        Spec(T.regularized_classifier_loss, lambda c: dict(model=c["model"], kind="gradient_norm",
                                                           lam=1e-3)),
        Spec(T.with_augmentation, lambda c: dict(loss_fn=c["loss"], augment=None),
             lambda c: [("augment", "not-callable", 3)]),
        # (steps=0 and epsilon=0 are valid: no attack, the clean examples)
        Spec(T.adversarial_classifier_loss, lambda c: dict(model=c["model"], epsilon=0.1,
                                                           steps=2, norm="l2"),
             lambda c: PGD_BAD, skip_auto=("steps", "epsilon")),
        Spec(T.pgd_attack, lambda c: dict(lit(c), key=c["key"], norm="linf", epsilon=0.1,
                                          step_size=0.01, steps=2),
             lambda c: [("clip", "reversed", (1.0, 0.0)), ("step_size", "nan", NAN),
                        ("step_size", "-1", -1.0), *PGD_BAD],
             skip_auto=("steps", "epsilon", "step_size")),
        Spec(T.make_optimizer, lambda c: dict(name="sgd", learning_rate=0.1, momentum=0.9),
             lambda c: [("b1", "1.5", 1.5), ("eps", "-1", -1.0)]),
        Spec(T.make_schedule, lambda c: dict(name="multistep", learning_rate=0.1, total_steps=100,
                                             milestones=(50,), gamma=0.1),
             lambda c: [("milestones", "unsorted", (60, 50)), ("milestones", "negative", (-1,))]),
        Spec(T.create_train_state, lambda c: dict(model=c["model"], tx=c["tx"], key=c["key"],
                                                  sample_x=c["data"]["image"][:1]),
             lambda c: [("tx", "not-an-optimizer", 3)]),
        Spec(T.train_state_from, lambda c: dict(variables=M.init_variables(
            c["model"], c["key"], c["data"]["image"][:1]), tx=c["tx"]),
             lambda c: [("variables", "no-params", {}), ("tx", "not-an-optimizer", 3)]),
        Spec(T.make_train_step, lambda c: dict(loss_fn=c["loss"], tx=c["tx"]),
             lambda c: [("loss_fn", "not-callable", 3)]),
        Spec(T.make_eval_step, lambda c: dict(logit_fn=c["f"]),
             lambda c: [("logit_fn", "not-callable", 3)]),
        Spec(T.evaluate, lambda c: dict(eval_step=T.make_eval_step(_mlp_apply(c)),
                                        params=c["state"].params, data=c["test"], batch_size=8),
             lambda c: [("data", "label-out-of-range", digits_like(
                 c, image=c["test"]["image"], label=c["test"]["label"] + 10), ("label",))]),
        Spec(T.fit, lambda c: dict(state=c["state"], train_step=c["step"], data=c["data"],
                                   key=c["key"], batch_size=8, num_steps=2),
             lambda c: [("data", "label-out-of-range", digits_like(
                 c, label=c["data"]["label"] + 10), ("label",)),
                        ("checkpoint_dir", "a-file", _a_file(c["tmp"]))],
             zero_ok=("num_steps",)),
        Spec(T.train_for_epochs, lambda c: dict(model=c["model"], loss_fn=c["loss"], tx=c["tx"],
                                                data=c["data"], key=c["key"], epochs=1,
                                                batch_size=16),
             lambda c: [("data", "label-out-of-range", digits_like(
                 c, label=c["data"]["label"] + 10), ("label",))]),
        Spec(T.train_seeds_for_epochs,
             lambda c: dict(model=c["model"], loss_fn=c["loss"], tx=c["tx"], data=c["data"],
                            keys=jax.random.split(c["key"], 2), epochs=1, batch_size=16),
             lambda c: [("keys", "not-keys", jnp.zeros(2)),
                        ("data", "label-out-of-range", digits_like(
                            c, label=c["data"]["label"] + 10), ("label",))]),
        Spec(T.epoch_steps, lambda c: dict(num_examples=64, epochs=2, batch_size=8)),
        Spec(T.abstract_train_state, lambda c: dict(model=c["model"], tx=c["tx"],
                                                    sample_shape=(1, H, W, C)),
             lambda c: [("sample_shape", "negative", (1, -8, W, C))]),
        Spec(T.compiled_cost, lambda c: dict(fn=jax.jit(lambda z: z * 2), z=jnp.ones(3)),
             lambda c: [("fn", "not-callable", 3)]),
        Spec(T.read_metrics, lambda c: dict(path=_metrics_file(c["tmp"])),
             lambda c: [("path", "missing", c["tmp"] / "none.jsonl"),
                        ("path", "garbage", _garbage(c["tmp"]))]),
        Spec(lambda **kw: T.Checkpointer(**kw).close(),
             lambda c: dict(directory=c["tmp"] / "ckpt", save_every=10, keep=2),
             lambda c: [("directory", "a-file", _a_file(c["tmp"]), ("directory", "checkpoint_dir"))],
             name="Checkpointer"),
        Spec(lambda **kw: T.MetricWriter(**kw).close(),
             lambda c: dict(path=c["tmp"] / "m.jsonl"),
             lambda c: [("path", "a-folder", c["tmp"])], name="MetricWriter"),
        Spec(lambda **kw: T.Progress(**kw).update(1), lambda c: dict(total=10, every_seconds=1.0),
             lambda c: [("total", "-1", -1), ("every_seconds", "-1", -1.0),
                        ("every_seconds", "nan", NAN)], name="Progress"),
    ]  # fmt: skip


def _viz_bad(c) -> list:
    a = np.asarray(c["a"][0, ..., 0])
    return [("attribution", "nan", np.where(a > a.mean(), np.nan, a)),
            ("attribution", "rank-1", a.reshape(-1))]  # fmt: skip


def _idx_folder(tmp: Path) -> Path:
    """A tiny MNIST-format test split (IDX files) of 12 images."""
    folder = tmp / "idx"
    if not folder.exists():
        folder.mkdir()
        rng = np.random.default_rng(0)
        n = 12
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)

        def head(code, dims):
            return bytes([0, 0, 8, code]) + b"".join(int(d).to_bytes(4, "big") for d in dims)

        (folder / "t10k-images-idx3-ubyte").write_bytes(head(3, images.shape) + images.tobytes())
        (folder / "t10k-labels-idx1-ubyte").write_bytes(head(1, labels.shape) + labels.tobytes())
    return folder


def _garbage(tmp: Path) -> Path:
    p = tmp / "garbage.bin"
    p.write_bytes(b"\x00\x01not a file of that kind\xff" * 3)
    return p


def _a_file(tmp: Path) -> Path:
    p = tmp / "a-file"
    p.write_text("not a folder")
    return p


def _metrics_file(tmp: Path) -> Path:
    p = tmp / "metrics.jsonl"
    p.write_text('{"step": 1, "loss": 0.5}\n')
    return p


def _mlp_apply(c):
    return lambda params, z: c["model"].apply({"params": params}, z)


@functools.cache
def _nnx_module():
    from flax import nnx

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.dense = nnx.Linear(H * W * C, K, rngs=rngs)

        def __call__(self, z):
            return self.dense(z.reshape(z.shape[0], -1))

    return Net(nnx.Rngs(0))


# --- building and running the cases --------------------------------------------------------


def fn_name(spec: Spec) -> str:
    return spec.name or spec.fn.__name__


def fn_module(spec: Spec) -> str:
    if spec.name:  # a class wrapped in a lambda
        obj = {"MLP": M.MLP, "MnistCNN": M.MnistCNN, "ResNet": M.ResNet, "VGG": M.VGG,
               "Checkpointer": T.Checkpointer, "MetricWriter": T.MetricWriter,
               "Progress": T.Progress}.get(spec.name, spec.fn)  # fmt: skip
        return obj.__module__
    return spec.fn.__module__


def cases(only_module: str | None = None) -> list[Case]:
    """The cases of every spec (of one top-level module, e.g. ``jaxgrad.training``)."""
    c = ctx()
    out = []
    for spec in specs():
        if only_module is not None and top_module(spec) != only_module:
            continue
        name, module = fn_name(spec), fn_module(spec)
        try:
            good = spec.good(c)
        except Exception as e:  # a broken valid call is a defect of this table
            raise RuntimeError(f"the valid call of {name} fails: {e!r}") from e
        params = _parameters(spec.fn)
        mutate = (
            spec.auto
            if spec.auto is not None
            else tuple(good) + tuple(p for p in params if p not in good)
        )
        seen = set()
        for arg in mutate:
            if arg in spec.skip_auto:
                continue
            value = good.get(arg, params.get(arg))
            required = arg in params and params[arg] is REQUIRED
            if value is REQUIRED:
                continue
            for what, bad in auto_bad(arg, value, c, required):
                seen.add((arg, what))
                if arg in spec.zero_ok and what in ("0", "array(0)"):
                    out.append(Case(module, name, arg, what, _call(spec.fn, good, arg, bad),
                                    (arg,), True))  # fmt: skip
                    continue
                nan_ok = spec.propagates and what == "nan" and hasattr(bad, "shape") and bad.ndim
                call = _call(spec.fn, good, arg, bad)
                out.append(Case(module, name, arg, what, call, (arg,), nan_ok=bool(nan_ok)))
            for what, ok in auto_valid(arg, value):
                out.append(
                    Case(module, name, arg, what, _call(spec.fn, good, arg, ok), (arg,), True)
                )
        for row in spec.bad(c):
            arg, what, bad = row[:3]
            names = row[3] if len(row) > 3 else (arg,)
            if (arg, what) in seen:
                continue
            if what == "unknown-kwarg":
                call = functools.partial(spec.fn, **good, bogus=1)
            else:
                call = _call(spec.fn, good, arg, bad)
            nan_ok = spec.propagates and what == "nan"
            out.append(Case(module, name, arg, what, call, names, nan_ok=nan_ok))
        if spec.runs_offline:
            call = _call(spec.fn, good, None, None)
            out.append(Case(module, name, "(valid call)", "ok", call, (), True))
    return out


REQUIRED = object()


def _parameters(fn) -> dict[str, Any]:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return {}
    return {
        n: (REQUIRED if p.default is inspect.Parameter.empty else p.default)
        for n, p in sig.parameters.items()
        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }


def _call(fn, good: dict, arg: str | None, value) -> Callable[[], Any]:
    kwargs = dict(good)
    if arg is not None:
        kwargs[arg] = value

    def call():
        out = fn(**kwargs)
        if inspect.isgenerator(out) or hasattr(out, "__next__"):
            out = list(out)  # iterators raise when drawn from
        return jax.block_until_ready(out) if _is_arrays(out) else out

    return call


def _is_arrays(out) -> bool:
    try:
        return all(isinstance(leaf, jax.Array | np.ndarray) for leaf in jax.tree.leaves(out))
    except Exception:
        return False


class _Hung(Exception):
    pass


@contextlib.contextmanager
def _time_limit(seconds: int):
    def on_alarm(signum, frame):
        raise _Hung(f"no answer after {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def run(case: Case) -> tuple[str, str]:
    """``(outcome, detail)``: outcome is named / unclear / silent / hung, or ok / rejected."""
    import warnings

    try:
        with _time_limit(TIME_LIMIT), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = case.call()
    except _Hung as e:
        return ("rejected" if case.valid else "hung"), str(e)
    except BaseException as e:  # noqa: BLE001 (SystemExit from a main counts as an error)
        if isinstance(e, KeyboardInterrupt):
            raise
        text = f"{type(e).__name__}: {e}"
        if case.valid:
            return "rejected", text[:300]
        named = any(_mentions(text, n) for n in case.names)
        return ("named" if named else "unclear"), text[:300]
    if case.valid:
        return "ok", ""
    if case.nan_ok and _has_nan(out):
        return "nan", "NaN propagated to the output"
    return "silent", ""


def _has_nan(out) -> bool:
    try:
        leaves = jax.tree.leaves(out)
    except Exception:
        return False
    return any(
        isinstance(v, jax.Array | np.ndarray)
        and np.issubdtype(v.dtype, np.floating)
        and bool(np.isnan(np.asarray(v)).any())
        for v in leaves
    )


def _mentions(text: str, name: str) -> bool:
    """``name`` as a word of ``text`` (case-sensitive); a name of one or two letters (``a``,
    ``b``, ``x``) only where it reads as an argument ("x must", "a and b", "x's", ...)."""
    pattern = rf"(?<![A-Za-z_]){re.escape(name)}(?![A-Za-z_0-9])"
    if len(name) <= 2:
        pattern += r"(?=( must| and | contains| has|'s| of shape| is| \(|:|=))"
    return re.search(pattern, text) is not None


def public_callables() -> dict[str, set[str]]:
    """Every public function and class of every public module, by defining module."""
    out: dict[str, set[str]] = {}
    names = ["jaxgrad"] + [
        m.name
        for m in pkgutil.walk_packages(jaxgrad.__path__, "jaxgrad.")
        if not any(part.startswith("_") for part in m.name.split("."))
    ]
    for name in names:
        module = importlib.import_module(name)
        public = getattr(module, "__all__", None)
        if public is None:
            # a module of a subpackage is public through its package's __all__; a module
            # right under jaxgrad has nothing above it, so it must list its own
            assert hasattr(module, "__path__") or name.count(".") > 1, f"{name} lacks __all__"
            continue
        for attr in public:
            obj = getattr(module, attr)
            if inspect.isfunction(obj) or (
                inspect.isclass(obj) and obj.__module__.startswith("jaxgrad")
            ):
                out.setdefault(obj.__module__, set()).add(attr)
            elif isinstance(obj, functools.partial):
                out.setdefault(obj.func.__module__, set()).add(attr)
    return out


# Public names without a case here, and why a bad-input case means nothing for them.
NO_ARGUMENTS = {
    "TrainState": "a flax struct built by create_train_state / train_state_from",
    "TappedLogitFn": "a dataclass built by linen_logit_fn / nnx_logit_fn / hooked_logit_fn",
    "LogitFn": "a typing.Protocol",
    "FullGradDecomposition": "a result type returned by fullgrad_decomposition",
    "Forward": "a result type returned by logits_with_vjp",
    "DatasetAttribution": "a result type returned by attribute_dataset",
    "FullGradWarning": "a warning class",
    "CheckpointError": "an exception class",
    "Diverged": "an exception class",
    "Preempted": "an exception class",
    "BasicBlock": "a block of ResNet (covered by ResNet's cases)",
    "Bottleneck": "a block of ResNet (covered by ResNet's cases)",
    "ResNet18": "functools.partial of ResNet (covered by ResNet's cases)",
    "ResNet50": "functools.partial of ResNet (covered by ResNet's cases)",
    "VGG11": "functools.partial of VGG (covered by VGG's cases)",
    "tap": "the taps' recording primitive, called by models, not users (identity outside a tap)",
    "to_host": "sharding.to_host takes any pytree (arrays or not) and returns it on the host",
    "is_main_process": "sharding.is_main_process takes no arguments",
    "second_order": "a context manager without arguments (trace-time only)",
}


def top_module(spec: Spec) -> str:
    return ".".join(fn_module(spec).split(".")[:2])


# Collected without building any value (the specs are lambdas): one test per module.
MODULES = sorted({top_module(s) for s in specs()})


@pytest.mark.parametrize("module", MODULES)
def test_bad_input_gets_a_named_error(module):
    failures = []
    for case in cases(module):
        outcome, detail = run(case)
        if case.valid:
            if outcome != "ok":
                failures.append(f"{case.id} must be accepted: {detail}")
        elif outcome not in (("named", "nan") if case.nan_ok else ("named",)):
            failures.append(f"{case.id}: {outcome}: {detail or 'returned a result'}")
    assert not failures, f"{len(failures)} case(s):\n" + "\n".join(failures)


def test_every_public_function_is_covered():
    covered = {(fn_module(s), fn_name(s)) for s in specs()}
    missing = sorted(
        f"{module}.{name}"
        for module, names in public_callables().items()
        for name in names
        if (module, name) not in covered and name not in NO_ARGUMENTS
    )
    assert not missing, f"public functions without bad-input cases: {missing}"


def table(results: list[tuple[Case, str, str]]) -> str:
    rows: dict[str, Counter] = {}
    for case, outcome, _ in results:
        module = ".".join(case.module.split(".")[:2])
        rows.setdefault(module, Counter())[outcome] += 1
    cols = ["named", "nan", "unclear", "silent", "hung"]
    lines = ["| module | bad inputs | named error | NaN in, NaN out | unclear | silent | hung "
             "| valid calls accepted |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    total = Counter()
    for module in sorted(rows):
        r = rows[module]
        total.update(r)
        tried = sum(r[k] for k in cols)
        lines.append(f"| {module} | {tried} | " + " | ".join(str(r[k]) for k in cols)
                     + f" | {r['ok']}/{r['ok'] + r['rejected']} |")  # fmt: skip
    tried = sum(total[k] for k in cols)
    lines.append(f"| all | {tried} | " + " | ".join(str(total[k]) for k in cols)
                 + f" | {total['ok']}/{total['ok'] + total['rejected']} |")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    jax.config.update("jax_numpy_rank_promotion", "raise")
    only = sys.argv[1:]
    results = []
    for case in cases():
        if only and not any(o in f"{case.module}.{case.id}" for o in only):
            continue
        outcome, detail = run(case)
        results.append((case, outcome, detail))
        if outcome not in ("named", "ok", "nan"):
            print(f"{outcome:9s} {case.module}.{case.id}: {detail[:200]}", flush=True)
    print(table(results))
