"""Evaluation metrics, jaxgrad against Captum and Quantus on the same weights, one process.

  python benchmarks/metrics.py [--batch 64] [--repeats 3] [--tiny] [--out FILE]

The MNIST CNN (jaxgrad's ``MnistCNN`` and its PyTorch twin) at batch 64, the gradient map as
the attribution, torch on the CPU. For each metric, at the peer's own defaults unless a row
says otherwise, the same work in each library:

- ``infidelity``: 10 Gaussian perturbations of std 0.003 (Captum's documented example);
  against ``captum.metrics.infidelity``.
- ``sensitivity_max``: 10 uniform perturbations of radius 0.02, the gradient recomputed at
  each; against ``captum.metrics.sensitivity_max`` (Saliency) and ``quantus.MaxSensitivity``
  with the same settings (Quantus's explanations by Captum's Saliency, as ``quantus.explain``
  does).
- ``avg_sensitivity``: Quantus's defaults, 200 samples of radius 0.2; ``quantus.AvgSensitivity``.
- ``road``: Quantus's 50 percentages (1%, 3%, ..., 99%), MoRF, noise 0.01;
  ``quantus.ROAD``.
- ``faithfulness_correlation``: Quantus's defaults, 100 runs of 224 pixels, baseline the
  image's minimum; ``quantus.FaithfulnessCorrelation``.
- ``pixel_flipping``: deletion of the most relevant pixels one image row (28 pixels) at a
  time, 28 steps, to the image's minimum; ``quantus.PixelFlipping(features_in_step=28)``
  against ``jaxgrad.evaluation.deletion_insertion``.

jaxgrad's figures are the median of ``--repeats`` calls of the jitted function at each
``chunk_size`` in (None, 8, 32), the best reported (as ``benchmarks/attribution.py`` does),
compilation excluded (reported apart as ``jaxgrad_compile_s``: a metric is compiled once per
shape and reused); each peer's is the median of ``--repeats`` calls (one for the slow Quantus
rows) at its defaults (the whole batch at once: Quantus's ``batch_size=64``, Captum's
``max_examples_per_batch=None``).
``ratio`` is the peer's time over jaxgrad's: above 1, jaxgrad is faster. Prints JSON and
writes it to ``--out`` when given.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from _common import machine_info, wall_times
from attribution import logit_fn_of, setup

from jaxgrad.attribution import gradient
from jaxgrad.evaluation import (
    deletion_insertion,
    faithfulness_correlation,
    infidelity,
    road,
    sensitivity,
)

CHUNKS = (None, 8, 32)  # jaxgrad's chunk_size (perturbed copies per call), the best reported


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def run_jax(fn, args, repeats):
    """(median seconds, compile + first call seconds) of ``jax.jit(fn)(*args)``."""
    jitted = jax.jit(fn)
    t0 = time.perf_counter()
    jax.block_until_ready(jitted(*args))
    first = time.perf_counter() - t0
    times = wall_times(lambda: jax.block_until_ready(jitted(*args)), repeats, warmup=0)
    return float(np.median(times)), first


def run_peer(fn, repeats):
    return float(np.median(wall_times(fn, repeats, warmup=0)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tiny", action="store_true", help="CI's smoke size (batch 4, few draws)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    import captum.attr
    import captum.metrics
    import quantus
    import torch

    batch = 4 if args.tiny else args.batch
    scale = 10 if args.tiny else 1  # fewer draws in the tiny run
    repeats = 1 if args.tiny else args.repeats
    model, v, x, t, tmodel = setup("cnn", batch)
    lf = logit_fn_of("cnn", model)
    tmodel.eval()
    xj, tj = jnp.asarray(x), jnp.asarray(t)
    a = np.asarray(gradient(lf, v, xj, tj))
    xt = torch.tensor(x.transpose(0, 3, 1, 2).copy())
    at = a.transpose(0, 3, 1, 2).copy()
    tt = torch.tensor(t.astype(np.int64))
    xn = x.transpose(0, 3, 1, 2).copy()  # Quantus's NumPy input
    key = jax.random.key(0)

    def saliency_explain(model, inputs, targets, **kwargs):  # Quantus's explain_func
        xr = torch.tensor(np.asarray(inputs), requires_grad=True)
        out = captum.attr.Saliency(model).attribute(xr, target=torch.tensor(targets), abs=False)
        return out.detach().numpy()

    def quantus_call(metric, **kw):
        return lambda: metric(model=tmodel, x_batch=xn, y_batch=t, a_batch=at, device="cpu", **kw)

    rows = {}

    def record(name, jax_fn, jax_args, peers, settings):
        by_chunk = {}
        for cs in CHUNKS:
            log(f"{name}: jaxgrad chunk_size={cs}")
            sec, first = run_jax(functools.partial(jax_fn, cs), jax_args, repeats)
            by_chunk[str(cs)] = {"seconds": sec, "compile_s": first - sec}
        best = min(by_chunk, key=lambda c: by_chunk[c]["seconds"])
        sec = by_chunk[best]["seconds"]
        row = {
            "settings": settings,
            "jaxgrad_s": sec,
            "jaxgrad_best_chunk_size": best,
            "jaxgrad_compile_s": by_chunk[best]["compile_s"],
            "jaxgrad_by_chunk_size": by_chunk,
        }
        for peer, (call, peer_repeats) in peers.items():
            log(f"{name}: {peer}")
            row[f"{peer}_s"] = run_peer(call, peer_repeats)
            row[f"ratio_{peer}"] = row[f"{peer}_s"] / sec
        rows[name] = row
        log(json.dumps(row))

    # Infidelity: Captum with its documented Gaussian perturbation.
    n_inf = max(10 // scale, 2)

    def captum_perturb(inputs):
        noise = torch.randn_like(inputs) * 0.003
        return noise, inputs - noise

    record(
        "infidelity",
        lambda cs, v, x, t, a, k: infidelity(
            lf, v, x, t, a, key=k, num_samples=n_inf, chunk_size=cs
        ),
        (v, xj, tj, jnp.asarray(a), key),
        {
            "captum": (
                lambda: captum.metrics.infidelity(
                    tmodel, captum_perturb, xt, torch.tensor(at), target=tt, n_perturb_samples=n_inf
                ),
                repeats,
            )
        },
        {"num_samples": n_inf, "noise_scale": 0.003},
    )

    # Max-sensitivity of the gradient (Captum's defaults).
    n_sens = max(10 // scale, 2)
    record(
        "sensitivity_max",
        lambda cs, v, x, t, k: sensitivity(
            lf, v, x, t, key=k, method=gradient, radius=0.02, num_samples=n_sens, chunk_size=cs
        ),
        (v, xj, tj, key),
        {
            "captum": (
                lambda: captum.metrics.sensitivity_max(
                    captum.attr.Saliency(tmodel).attribute,
                    xt.clone(),
                    n_perturb_samples=n_sens,
                    target=tt,
                    abs=False,
                ),
                repeats,
            ),
            "quantus": (
                quantus_call(
                    quantus.MaxSensitivity(
                        nr_samples=n_sens, lower_bound=0.02, disable_warnings=True
                    ),
                    explain_func=saliency_explain,
                ),
                repeats,
            ),
        },
        {"num_samples": n_sens, "radius": 0.02, "method": "gradient"},
    )

    # Avg-sensitivity at Quantus's defaults.
    n_avg = max(200 // scale, 2)
    record(
        "avg_sensitivity",
        lambda cs, v, x, t, k: sensitivity(
            lf,
            v,
            x,
            t,
            key=k,
            method=gradient,
            radius=0.2,
            num_samples=n_avg,
            reduce="mean",
            chunk_size=cs,
        ),  # fmt: skip
        (v, xj, tj, key),
        {
            "quantus": (
                quantus_call(
                    quantus.AvgSensitivity(
                        nr_samples=n_avg, lower_bound=0.2, disable_warnings=True
                    ),
                    explain_func=saliency_explain,
                ),
                1,
            )
        },
        {"num_samples": n_avg, "radius": 0.2, "method": "gradient"},
    )

    # ROAD at Quantus's defaults.
    percentages = list(range(1, 100, 2))[:: 5 if args.tiny else 1]
    record(
        "road",
        lambda cs, v, x, t, a, k: road(
            lf,
            v,
            x,
            t,
            a,
            key=k,
            fractions=np.array(percentages) / 100,
            aggregate="sum",
            chunk_size=cs,
        ),  # fmt: skip
        (v, xj, tj, jnp.asarray(a), key),
        {
            "quantus": (
                quantus_call(
                    quantus.ROAD(percentages=percentages, noise=0.01, disable_warnings=True)
                ),
                1,
            )
        },
        {"fractions": len(percentages), "order": "most", "noise": 0.01},
    )

    # Faithfulness correlation at Quantus's defaults.
    runs = max(100 // scale, 2)
    record(
        "faithfulness_correlation",
        lambda cs, v, x, t, a, k: faithfulness_correlation(
            lf, v, x, t, a, key=k, num_runs=runs, subset_size=224, chunk_size=cs
        ),
        (v, xj, tj, jnp.asarray(a), key),
        {
            "quantus": (
                quantus_call(
                    quantus.FaithfulnessCorrelation(
                        nr_runs=runs, subset_size=224, disable_warnings=True
                    )
                ),
                repeats,
            )
        },
        {"num_runs": runs, "subset_size": 224},
    )

    # Pixel flipping: one row of pixels per step.
    record(
        "pixel_flipping",
        lambda cs, v, x, t, a: deletion_insertion(
            lf,
            v,
            x,
            t,
            a,
            mode="deletion",
            num_steps=28,
            aggregate="sum",
            fill="image_min",
            chunk_size=cs,
        )["auc"],  # fmt: skip
        (v, xj, tj, jnp.asarray(a)),
        {
            "quantus": (
                quantus_call(quantus.PixelFlipping(features_in_step=28, disable_warnings=True)),
                repeats,
            )
        },
        {"num_steps": 28, "order": "most", "fill": "image_min"},
    )

    result = {
        "machine": machine_info(),
        "torch_threads": torch.get_num_threads(),
        "model": "MnistCNN",
        "batch": batch,
        "tiny": args.tiny,
        "metrics": rows,
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
