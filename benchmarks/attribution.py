"""Attribution throughput, jaxgrad against Captum on the same weights, and IG's memory.

  python benchmarks/attribution.py [--models cnn,user_cnn,user_cnn_fast,mlp,resnet18] [--repeats 3] [--out FILE]

For each model (MNIST CNN at batch 64; the same CNN as a user writes it, stock Flax layers
and a plain ``apply`` as its ``logit_fn``, as it is and through ``fast_logit_fn``; a digits-size MLP 64-2500-1500-500-10 at batch 64;
CIFAR ResNet-18 at batch 16) and method (gradient; Integrated Gradients, 64 Gauss-Legendre
steps, zero baseline; SmoothGrad, 32 samples): examples/s of jaxgrad (jitted; compilation
excluded; every ``chunk_size`` in the list, and the best) and of Captum 0.9 at each
``internal_batch_size`` (IG) or ``nt_samples_batch_size`` (SmoothGrad) among 16, 64, 256 and
none, the same weights in the same process, and the ratio of the bests. Also IG's time over
``steps x`` one batched gradient (the floor of any step-by-step evaluation), and XLA's
temporary buffer size of the compiled IG as ``chunk_size`` and ``steps`` vary (the memory
bound). The outputs of both libraries are compared before timing. Prints JSON, and writes
it to ``--out`` when given.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time

import _twins
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from _common import machine_info, torch_sync

from jaxgrad.attribution import gradient, integrated_gradients, smoothgrad
from jaxgrad.models import (
    MLP,
    MnistCNN,
    ResNet18,
    fast_logit_fn,
    init_variables,
    linen_logit_fn,
)

IG_STEPS, SG_SAMPLES, NOISE = 64, 32, 0.15
CAPTUM_SIZES = (16, 64, 256, None)


def log(msg):
    print(msg, file=sys.stderr, flush=True)


class UserCNN(nn.Module):
    """The MNIST CNN as a user writes it: stock ``nn.Conv``, ``nn.max_pool`` and ``nn.Dense``.

    The same architecture as :class:`jaxgrad.models.MnistCNN` (and the same PyTorch twin),
    without jaxgrad's layers (its canonical-layout convolution and reshape max-pooling)."""

    @nn.compact
    def __call__(self, x):
        for name, width in (("hidden1", 32), ("hidden2", 64)):
            x = nn.relu(nn.Conv(width, (5, 5), padding="SAME", name=name)(x))
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = nn.relu(nn.Dense(1024, name="fc1")(x.reshape(x.shape[0], -1)))
        return nn.Dense(10, name="softmax_linear")(x)


def logit_fn_of(name, model):
    """jaxgrad's adapter for its own models; a user's plain ``apply`` for :class:`UserCNN`,
    through :func:`jaxgrad.models.fast_logit_fn` for ``user_cnn_fast``."""
    if name == "user_cnn":
        return lambda variables, x: model.apply(variables, x)
    if name == "user_cnn_fast":
        return fast_logit_fn(lambda variables, x: model.apply(variables, x))
    return linen_logit_fn(model)


def setup(name, batch=None, twin=True):
    """(model, variables, x, targets, PyTorch twin or None); ``batch`` overrides the model's own."""
    if name == "cnn":
        model, shape, batch, make_twin = MnistCNN(), (28, 28, 1), batch or 64, _twins.cnn
    elif name in ("user_cnn", "user_cnn_fast"):
        model, shape, batch, make_twin = UserCNN(), (28, 28, 1), batch or 64, _twins.cnn
    elif name == "mlp":
        model, shape, batch, make_twin = MLP(), (8, 8, 1), batch or 64, _twins.mlp
    else:
        model, shape, batch, make_twin = ResNet18(), (32, 32, 3), batch or 16, _twins.resnet
    init = (lambda m, k, x: m.init(k, x)) if name.startswith("user") else init_variables
    with jax.threefry_partitionable(False):
        v = jax.jit(init, static_argnums=0)(model, jax.random.key(0), jnp.zeros((1, *shape)))
    if "batch_stats" in v:  # non-trivial running statistics, as after training
        v["batch_stats"] = jax.tree.map(
            lambda a: a + 0.1 * jax.random.uniform(jax.random.key(3), a.shape), v["batch_stats"]
        )
    x = np.asarray(jax.random.uniform(jax.random.key(1), (batch, *shape)), np.float32)
    t = np.arange(batch, dtype=np.int32) % 10
    return model, v, x, t, (make_twin(v) if twin else None)


class _full_precision:
    """PyTorch without TF32 inside the block (the twin check compares at float32)."""

    def __init__(self, torch):
        self.torch = torch

    def __enter__(self):
        b = self.torch.backends
        self.saved = (b.cuda.matmul.allow_tf32, b.cudnn.allow_tf32)
        b.cuda.matmul.allow_tf32 = b.cudnn.allow_tf32 = False

    def __exit__(self, *exc):
        b = self.torch.backends
        b.cuda.matmul.allow_tf32, b.cudnn.allow_tf32 = self.saved


def agreement(ours, theirs):
    """Share of elements within 1e-3 of the map's scale, and the largest gap (relative).

    Not exact: a max-pool window whose two largest inputs differ by float32 rounding may
    route its gradient differently in the two libraries (the equality tests use a model
    and inputs without such near-ties)."""
    scale = np.abs(theirs).max()
    gap = np.abs(ours - theirs) / scale
    return {"share_within_1e-3": float(np.mean(gap <= 1e-3)), "max_gap": float(gap.max())}


def timed(fn, repeats):
    """Median wall time of ``fn()`` over ``repeats`` calls after one warm-up call."""
    out = fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), out


def bench_model(
    name, parts, repeats, chunks, device="cpu", ig_steps=IG_STEPS, sg_samples=SG_SAMPLES
):
    """Gradient, IG and SmoothGrad of jaxgrad and Captum (on torch ``device``), timed."""
    import torch
    from captum.attr import IntegratedGradients, NoiseTunnel, Saliency

    model, v, x, t, tmodel = parts
    batch = len(x)
    lf = logit_fn_of(name, model)
    xj, tj = jnp.asarray(x), jnp.asarray(t)
    tmodel = tmodel.to(device)
    xt = torch.tensor(x.transpose(0, 3, 1, 2).copy() if name != "mlp" else x.copy()).to(device)
    tt = torch.tensor(t.astype(np.int64)).to(device)
    to_nhwc = (lambda a: a.transpose(0, 2, 3, 1)) if name != "mlp" else (lambda a: a)
    with torch.no_grad(), jax.default_matmul_precision("highest"), _full_precision(torch):
        np.testing.assert_allclose(
            tmodel(xt).cpu().numpy(), lf(v, xj), rtol=1e-3, atol=1e-4, err_msg="twin differs"
        )
    res = {"batch": batch, "torch_threads": torch.get_num_threads(), "torch_device": device}
    key = jax.random.key(0)

    def jax_call(fn):
        return lambda: jax.block_until_ready(fn(v, xj, tj))

    def run_jax(method, **kw):
        fn = jax.jit(functools.partial(method, lf, **kw))
        t0 = time.perf_counter()
        jax.block_until_ready(fn(v, xj, tj))
        compile_s = time.perf_counter() - t0
        sec, out = timed(jax_call(fn), repeats)
        return sec, compile_s, np.asarray(out)

    sync = torch_sync(device)

    def run_captum(make, **kw):
        def call():  # synchronised, without a copy to the host (as jaxgrad's side)
            xr = xt.clone().requires_grad_(True)
            out = make().attribute(xr, target=tt, **kw).detach()
            sync()
            return out

        sec, out = timed(call, repeats)
        return sec, to_nhwc(out.cpu().numpy())

    # Gradient.
    log(f"{name}: gradient")
    g_sec, g_compile, g_out = run_jax(gradient)
    c_sec, c_out = run_captum(lambda: Saliency(tmodel), abs=False)
    res["gradient_agreement"] = agreement(g_out.reshape(c_out.shape), c_out)
    res["gradient"] = {
        "jaxgrad_examples_per_s": batch / g_sec,
        "jaxgrad_compile_s": g_compile,
        "captum_examples_per_s": batch / c_sec,
        "ratio": c_sec / g_sec,
    }

    # Integrated Gradients.
    ig = {"steps": ig_steps, "jaxgrad": {}, "captum": {}}
    outs = {}
    for cs in chunks:
        log(f"{name}: IG jaxgrad chunk_size={cs}")
        sec, comp, outs[cs] = run_jax(
            integrated_gradients, steps=ig_steps, rule="gauss_legendre", chunk_size=cs
        )
        ig["jaxgrad"][str(cs)] = {"examples_per_s": batch / sec, "seconds": sec, "compile_s": comp}
    for ibs in CAPTUM_SIZES:
        log(f"{name}: IG captum internal_batch_size={ibs}")
        sec, c_out = run_captum(
            lambda: IntegratedGradients(tmodel),
            n_steps=ig_steps,
            method="gausslegendre",
            internal_batch_size=ibs,
        )
        ig["captum"][str(ibs)] = {"examples_per_s": batch / sec, "seconds": sec}
    ours = outs[chunks[0]].reshape(c_out.shape)
    ig["agreement_with_captum"] = agreement(ours, c_out)
    best_j = min(ig["jaxgrad"].items(), key=lambda kv: kv[1]["seconds"])
    best_c = min(ig["captum"].items(), key=lambda kv: kv[1]["seconds"])
    ig["best_jaxgrad_chunk_size"], ig["best_captum_internal_batch_size"] = best_j[0], best_c[0]
    ig["ratio"] = best_c[1]["seconds"] / best_j[1]["seconds"]
    ig["over_steps_x_gradient"] = {
        k: r["seconds"] / (ig_steps * g_sec) for k, r in ig["jaxgrad"].items()
    }
    res["integrated_gradients"] = ig

    # SmoothGrad.
    sg = {"num_samples": sg_samples, "jaxgrad": {}, "captum": {}}
    for cs in chunks:
        cs_sg = None if cs is None else min(cs, sg_samples)
        log(f"{name}: SmoothGrad jaxgrad chunk_size={cs_sg}")
        sec, comp, _ = run_jax(
            functools.partial(smoothgrad, key=key),
            num_samples=sg_samples,
            noise_level=NOISE,
            chunk_size=cs_sg,
        )
        sg["jaxgrad"][str(cs_sg)] = {
            "examples_per_s": batch / sec,
            "seconds": sec,
            "compile_s": comp,
        }
    stdev = float(NOISE * (x.max() - x.min()))
    for nbs in CAPTUM_SIZES:
        log(f"{name}: SmoothGrad captum nt_samples_batch_size={nbs}")
        sec, _ = run_captum(
            lambda: NoiseTunnel(Saliency(tmodel)),
            nt_type="smoothgrad",
            nt_samples=sg_samples,
            nt_samples_batch_size=nbs,
            stdevs=stdev,
            abs=False,
        )
        sg["captum"][str(nbs)] = {"examples_per_s": batch / sec, "seconds": sec}
    best_j = min(sg["jaxgrad"].values(), key=lambda r: r["seconds"])
    best_c = min(sg["captum"].values(), key=lambda r: r["seconds"])
    sg["ratio"] = best_c["seconds"] / best_j["seconds"]
    res["smoothgrad"] = sg
    return res


def ig_memory(name, parts):
    """XLA's temporary buffers of the compiled IG (MiB) by chunk_size and by steps."""
    model, v, x, t, _ = parts
    lf = logit_fn_of(name, model)

    def temp_mib(steps, cs):
        fn = jax.jit(functools.partial(integrated_gradients, lf, steps=steps, chunk_size=cs))
        mem = fn.lower(v, jnp.asarray(x), jnp.asarray(t)).compile().memory_analysis()
        return mem.temp_size_in_bytes / 2**20

    by_chunk = {str(cs): temp_mib(IG_STEPS, cs) for cs in (1, 4, 16, 64, None)}
    by_steps = {str(s): temp_mib(s, 16) for s in (32, 64, 128, 256)}
    return {"steps_64_by_chunk_size": by_chunk, "chunk_16_by_steps": by_steps}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="cnn,user_cnn,user_cnn_fast,mlp,resnet18")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunks", default="none,16,4,1", help="jaxgrad chunk sizes to time")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    chunks = [None if c == "none" else int(c) for c in args.chunks.split(",")]
    result = {"machine": machine_info(), "models": {}}
    for name in filter(None, args.models.split(",")):
        repeats = 1 if name == "resnet18" else args.repeats
        parts = setup(name)
        result["models"][name] = bench_model(name, parts, repeats, chunks)
        log(f"{name}: IG memory")
        result["models"][name]["ig_memory_mib"] = ig_memory(name, parts)
        log(json.dumps(result["models"][name], indent=1))
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
