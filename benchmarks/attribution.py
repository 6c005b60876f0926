"""Attribution throughput, jaxgrad against Captum on the same weights, and IG's memory.

  python benchmarks/attribution.py [--models cnn,mlp,resnet18] [--repeats 3] [--out FILE]

For each model (MNIST CNN at batch 64, a digits-size MLP 64-2500-1500-500-10 at batch 64,
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
import jax
import jax.numpy as jnp
import numpy as np
from _common import machine_info

from jaxgrad.attribution import gradient, integrated_gradients, smoothgrad
from jaxgrad.models import MLP, MnistCNN, ResNet18, init_variables, linen_logit_fn

IG_STEPS, SG_SAMPLES, NOISE = 64, 32, 0.15
CAPTUM_SIZES = (16, 64, 256, None)


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def setup(name):
    if name == "cnn":
        model, shape, batch, twin = MnistCNN(), (28, 28, 1), 64, _twins.cnn
    elif name == "mlp":
        model, shape, batch, twin = MLP(), (8, 8, 1), 64, _twins.mlp
    else:
        model, shape, batch, twin = ResNet18(), (32, 32, 3), 16, _twins.resnet
    with jax.threefry_partitionable(False):
        v = jax.jit(init_variables, static_argnums=0)(
            model, jax.random.key(0), jnp.zeros((1, *shape))
        )
    if "batch_stats" in v:  # non-trivial running statistics, as after training
        v["batch_stats"] = jax.tree.map(
            lambda a: a + 0.1 * jax.random.uniform(jax.random.key(3), a.shape), v["batch_stats"]
        )
    x = np.asarray(jax.random.uniform(jax.random.key(1), (batch, *shape)), np.float32)
    t = np.arange(batch, dtype=np.int32) % 10
    return model, v, x, t, twin(v)


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


def bench_model(name, parts, repeats, chunks):
    import torch
    from captum.attr import IntegratedGradients, NoiseTunnel, Saliency

    model, v, x, t, tmodel = parts
    batch = len(x)
    lf = linen_logit_fn(model)
    xj, tj = jnp.asarray(x), jnp.asarray(t)
    xt = torch.tensor(x.transpose(0, 3, 1, 2).copy() if name != "mlp" else x.copy())
    tt = torch.tensor(t.astype(np.int64))
    to_nhwc = (lambda a: a.transpose(0, 2, 3, 1)) if name != "mlp" else (lambda a: a)
    with torch.no_grad():
        np.testing.assert_allclose(tmodel(xt).numpy(), lf(v, xj), rtol=1e-3, atol=1e-4)
    res = {"batch": batch, "torch_threads": torch.get_num_threads()}
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

    def run_captum(make, **kw):
        def call():
            xr = xt.clone().requires_grad_(True)
            return make().attribute(xr, target=tt, **kw).detach().numpy()

        sec, out = timed(call, repeats)
        return sec, to_nhwc(out)

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
    ig = {"steps": IG_STEPS, "jaxgrad": {}, "captum": {}}
    outs = {}
    for cs in chunks:
        log(f"{name}: IG jaxgrad chunk_size={cs}")
        sec, comp, outs[cs] = run_jax(
            integrated_gradients, steps=IG_STEPS, rule="gauss_legendre", chunk_size=cs
        )
        ig["jaxgrad"][str(cs)] = {"examples_per_s": batch / sec, "seconds": sec, "compile_s": comp}
    for ibs in CAPTUM_SIZES:
        log(f"{name}: IG captum internal_batch_size={ibs}")
        sec, c_out = run_captum(
            lambda: IntegratedGradients(tmodel),
            n_steps=IG_STEPS,
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
        k: r["seconds"] / (IG_STEPS * g_sec) for k, r in ig["jaxgrad"].items()
    }
    res["integrated_gradients"] = ig

    # SmoothGrad.
    sg = {"num_samples": SG_SAMPLES, "jaxgrad": {}, "captum": {}}
    for cs in chunks:
        cs_sg = None if cs is None else min(cs, SG_SAMPLES)
        log(f"{name}: SmoothGrad jaxgrad chunk_size={cs_sg}")
        sec, comp, _ = run_jax(
            functools.partial(smoothgrad, key=key),
            num_samples=SG_SAMPLES,
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
            nt_samples=SG_SAMPLES,
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


def ig_memory(parts):
    """XLA's temporary buffers of the compiled IG (MiB) by chunk_size and by steps."""
    model, v, x, t, _ = parts
    lf = linen_logit_fn(model)

    def temp_mib(steps, cs):
        fn = jax.jit(functools.partial(integrated_gradients, lf, steps=steps, chunk_size=cs))
        mem = fn.lower(v, jnp.asarray(x), jnp.asarray(t)).compile().memory_analysis()
        return mem.temp_size_in_bytes / 2**20

    by_chunk = {str(cs): temp_mib(IG_STEPS, cs) for cs in (1, 4, 16, 64, None)}
    by_steps = {str(s): temp_mib(s, 16) for s in (32, 64, 128, 256)}
    return {"steps_64_by_chunk_size": by_chunk, "chunk_16_by_steps": by_steps}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="cnn,mlp,resnet18")
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
        result["models"][name]["ig_memory_mib"] = ig_memory(parts)
        log(json.dumps(result["models"][name], indent=1))
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
