"""One command for any backend: training steps, score matching and attribution, jaxgrad against
PyTorch and Captum on the same device, with per-op breakdowns of the compiled programs.

  python benchmarks/suite.py [--tiny] [--out-dir benchmarks/results] [--skip-torch]

Detects JAX's backend and runs, in one process:

* ``train_step``: one SGD (momentum 0.9) step of the MNIST CNN and the CIFAR ResNet-18 at
  batch 128, jaxgrad (jitted, donated state) against the same architecture in PyTorch on the
  same device (CPU: PyTorch's CPU build; GPU: PyTorch with CUDA, TF32 allowed as JAX's default
  float32 precision does on a GPU, and cuDNN's autotuning as XLA's; TPU: jaxgrad alone), with
  XLA's FLOP count of the step and the share of the chip's dense peak it reaches at the
  precision float32 runs in there (bf16 passes on a TPU, TF32 on a GPU), where the chip is known;
* ``score_matching``: the regularized steps of Srinivas & Fleuret (2021) (Taylor and one-probe
  Hutchinson score matching) over a cross-entropy step, softplus CNN and ResNet-18, batch 64;
* ``attribution``: gradient, Integrated Gradients (64 Gauss-Legendre steps) and SmoothGrad (32
  samples) on the MNIST CNN (jaxgrad's layers), the same CNN written with stock Flax layers
  (a user's model; as it is, and through ``jaxgrad.models.fast_logit_fn``) and ResNet-18,
  against Captum on the same weights and device;
* ``latency``: the same three methods on one image (batch 1, an interactive call), jaxgrad's
  CNN and the user's stock-layer CNN (as it is and through ``fast_logit_fn``), against Captum;
* ``conv_kernels``: each distinct convolution of the two models alone (forward, and forward
  plus both gradients), XLA against PyTorch: what neither library's own code can change;
* ``breakdown``: where the time goes, per category of operation (convolution forward, input-
  and weight-gradient, layout copies, ...) and per op, for the ResNet-18 and CNN training steps
  (with PyTorch's profile of the same step), the ResNet-18 Taylor score-matching step and IG
  on the three CNNs (``benchmarks/_profile.py`` says how ops are classified).

Writes ``suite_<machine>.json`` and ``suite_<machine>.md`` (the summary and the breakdowns as
tables) into ``--out-dir``, the machine being ``cpu<cores>`` or the accelerator's kind
(``nvidia-h200``, ``tpu-v5-lite``); ``--tiny`` (what CI runs) uses small batches and few steps
and adds ``_tiny`` to the names. Only ratios from one run are comparable: the machine's load
moves both sides.
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # PyTorch shares the device

import argparse  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import attribution  # noqa: E402
import jax  # noqa: E402
import optax  # noqa: E402
import score_matching  # noqa: E402
import train_step  # noqa: E402
from _common import machine_info, torch_sync, wall_times  # noqa: E402
from _profile import jax_breakdown, markdown, torch_breakdown  # noqa: E402

from jaxgrad.attribution import integrated_gradients  # noqa: E402
from jaxgrad.training import (  # noqa: E402
    create_train_state,
    make_train_step,
    regularized_classifier_loss,
)

# Dense peak per chip at the precision float32 work runs in by default (FLOP/s, vendors'
# figures), matched by substring of device_kind: TPUs multiply float32 in bf16 passes, NVIDIA
# GPUs in TF32 (SXM parts).
PEAK = {
    "TPU v4": (275e12, "bf16"),
    "TPU v5 lite": (197e12, "bf16"),
    "TPU v5p": (459e12, "bf16"),
    "TPU v5": (459e12, "bf16"),
    "TPU v6 lite": (918e12, "bf16"),
    "H200": (495e12, "TF32"),
    "H100": (495e12, "TF32"),
    "A100": (156e12, "TF32"),
}

FULL = {
    "train_batch": 128,
    "sm_batch": 64,
    "attribution_models": ("cnn", "user_cnn", "user_cnn_fast", "resnet18"),
    "attribution_batch": None,  # each model's own (64 for the CNNs, 16 for ResNet-18)
    "ig_steps": attribution.IG_STEPS,
    "sg_samples": attribution.SG_SAMPLES,
    "sm_models": ("cnn", "resnet18"),
    "latency_models": ("cnn", "user_cnn", "user_cnn_fast"),
}
TINY = {
    "train_batch": 4,
    "sm_batch": 2,
    "attribution_models": ("cnn", "user_cnn", "user_cnn_fast"),
    "attribution_batch": 2,
    "ig_steps": 4,
    "sg_samples": 4,
    "sm_models": ("cnn",),
    "latency_models": ("cnn",),
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def machine_name() -> str:
    if jax.default_backend() == "cpu":
        return f"cpu{os.cpu_count()}"
    return re.sub(r"[^a-z0-9]+", "-", jax.devices()[0].device_kind.lower()).strip("-")


def peak_flops() -> tuple[float, str] | None:
    kind = jax.devices()[0].device_kind
    for name, peak in PEAK.items():
        if name in kind:
            return peak
    return None


def torch_device(backend: str, skip: bool) -> tuple[str | None, str]:
    """PyTorch's device for the peer runs, or None with the reason."""
    if skip:
        return None, "--skip-torch"
    if backend == "tpu":
        return None, "TPU: jaxgrad alone"
    try:
        import torch
    except ImportError:
        return None, "torch is not installed: pip install -e '.[bench]'"
    if backend == "gpu":
        if not torch.cuda.is_available():
            return None, "this torch sees no CUDA device"
        # JAX's default float32 precision on a GPU uses TF32 products; PyTorch's the same.
        # XLA picks its convolution algorithms by autotuning; cuDNN's benchmark mode does too.
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
        return "cuda", (
            "PyTorch with CUDA, TF32 allowed (as JAX's default precision), cudnn.benchmark"
        )
    return "cpu", f"PyTorch CPU, {torch.get_num_threads()} threads"


def bench_train(cfg, steps, device, peak) -> dict:
    out = {}
    for name in ("cnn", "resnet18"):
        log(f"train step: {name}")
        row = {"jax": train_step.bench_jax(name, cfg["train_batch"], steps)}
        flops = row["jax"].get("flops_per_step")
        if flops:
            row["jax"]["tflop_per_s"] = flops / row["jax"]["step_s"] / 1e12
            if peak:
                row["jax"]["share_of_dense_peak"] = flops / row["jax"]["step_s"] / peak[0]
                row["jax"]["peak"] = f"{peak[0] / 1e12:.0f} TFLOP/s dense {peak[1]}"
        if device:
            row["torch"] = train_step.bench_torch(name, cfg["train_batch"], steps, device)
            row["ratio_jax_over_torch"] = (
                row["jax"]["examples_per_s"] / (row["torch"]["examples_per_s"])
            )
        out[name] = row
        log(f"  {json.dumps(row)}")
    return out


# (name, input H=W, input channels, output channels, kernel, stride) of every distinct
# convolution of the two models (ResNet-18's shortcut 1x1 convolutions are left out).
CONVS = (
    ("cnn hidden1", 28, 1, 32, 5, 1),
    ("cnn hidden2", 14, 32, 64, 5, 1),
    ("resnet stem", 32, 3, 64, 3, 1),
    ("resnet layer1", 32, 64, 64, 3, 1),
    ("resnet layer2 down", 32, 64, 128, 3, 2),
    ("resnet layer2", 16, 128, 128, 3, 1),
    ("resnet layer3 down", 16, 128, 256, 3, 2),
    ("resnet layer3", 8, 256, 256, 3, 1),
    ("resnet layer4 down", 8, 256, 512, 3, 2),
    ("resnet layer4", 4, 512, 512, 3, 1),
)


def _jax_call(fn, *args):
    return jax.block_until_ready(fn(*args))


def bench_conv_kernels(batch: int, repeats: int, device: str | None) -> list[dict]:
    """Each convolution alone, forward and forward + backward (input and weight gradients),
    XLA against PyTorch on the same device: the kernels neither library's code around them
    can change."""
    import jax.numpy as jnp
    import numpy as np

    rows = []
    for name, hw, cin, cout, k, stride in CONVS:
        rng = np.random.default_rng(0)
        x = rng.normal(size=(batch, hw, hw, cin)).astype(np.float32)
        w = (rng.normal(size=(k, k, cin, cout)) / np.sqrt(k * k * cin)).astype(np.float32)
        pad = ((k // 2, k // 2),) * 2

        def conv(x, w, stride=stride, pad=pad):
            return jax.lax.conv_general_dilated(
                x, w, (stride, stride), pad, dimension_numbers=("NHWC", "HWIO", "NHWC")
            )

        fwd = jax.jit(conv)
        both = jax.jit(jax.grad(lambda x, w: jnp.sum(conv(x, w) ** 2), argnums=(0, 1)))
        run_fwd = functools.partial(_jax_call, fwd, jnp.asarray(x), jnp.asarray(w))
        run_both = functools.partial(_jax_call, both, jnp.asarray(x), jnp.asarray(w))
        row = {
            "conv": name,
            "shape": f"{batch}x{hw}x{hw}x{cin} -> {cout}, {k}x{k}, stride {stride}",
            "xla_forward_ms": 1e3 * min(wall_times(run_fwd, repeats)),
            "xla_forward_backward_ms": 1e3 * min(wall_times(run_both, repeats)),
        }
        if device:
            import torch

            sync = torch_sync(device)
            xt = torch.tensor(x.transpose(0, 3, 1, 2).copy(), device=device, requires_grad=True)
            wt = torch.tensor(w.transpose(3, 2, 0, 1).copy(), device=device, requires_grad=True)

            def tf(xt=xt, wt=wt, stride=stride, k=k):
                with torch.no_grad():
                    return torch.nn.functional.conv2d(xt, wt, stride=stride, padding=k // 2)

            def tb(xt=xt, wt=wt, stride=stride, k=k):
                out = torch.nn.functional.conv2d(xt, wt, stride=stride, padding=k // 2)
                return torch.autograd.grad((out**2).sum(), (xt, wt))

            row["torch_forward_ms"] = 1e3 * min(wall_times(tf, repeats, sync))
            row["torch_forward_backward_ms"] = 1e3 * min(wall_times(tb, repeats, sync))
            row["forward_ratio"] = row["torch_forward_ms"] / row["xla_forward_ms"]
            row["forward_backward_ratio"] = (
                row["torch_forward_backward_ms"] / row["xla_forward_backward_ms"]
            )
        rows.append(row)
        log(f"  {json.dumps(row)}")
    return rows


def bench_score_matching(cfg, steps) -> dict:
    kinds = ("cross_entropy", "score_matching_taylor", "score_matching_hutchinson_1probe")
    return {
        name: score_matching.bench_train_steps(name, cfg["sm_batch"], steps, kinds=kinds)
        for name in cfg["sm_models"]
    }


def bench_attribution(cfg, repeats, chunks, device, models=None, batch=None) -> dict:
    """Gradient, IG and SmoothGrad against Captum for each of ``models`` (default: the
    config's ``attribution_models`` at ``attribution_batch``; batch 1 is the latency part)."""
    out = {}
    for name in models or cfg["attribution_models"]:
        parts = attribution.setup(name, batch=batch or cfg["attribution_batch"])
        out[name] = attribution.bench_model(
            name,
            parts,
            1 if name == "resnet18" and jax.default_backend() == "cpu" else repeats,
            chunks,
            device=device,
            ig_steps=cfg["ig_steps"],
            sg_samples=cfg["sg_samples"],
        )
        ratios = {k: out[name][k].get("ratio") for k in ("gradient", "integrated_gradients")}
        log(f"  {name}, batch {out[name]['batch']}: {json.dumps(ratios)} against Captum")
    return out


def _guarded(fn, *args, **kw) -> dict:
    """``fn(...)``, or the error it raised (a profiler that cannot run must not lose the rest)."""
    try:
        return fn(*args, **kw)
    except Exception as e:  # noqa: BLE001
        log(f"  failed: {type(e).__name__}: {e}")
        return {"error": f"{type(e).__name__}: {e}"}


def breakdowns(cfg, device, tiny: bool) -> dict:
    out = {}
    names = ("resnet18",) if tiny else ("resnet18", "cnn")
    for name in names:
        log(f"breakdown: {name} training step")
        step, state, batch, key = train_step.jax_step(name, cfg["train_batch"], donate=False)
        part = {"jax": _guarded(jax_breakdown, step, state, batch, key)}
        if device:
            tstep, _ = train_step.torch_step(name, cfg["train_batch"], device)
            part["torch"] = _guarded(torch_breakdown, tstep, device=device)
        out[f"{name} training step"] = part
    if tiny:
        return out
    log("breakdown: resnet18 Taylor score-matching step")
    model = score_matching.make_model("resnet18")
    batch = score_matching.make_batch("resnet18", cfg["sm_batch"])
    tx = optax.sgd(0.01, momentum=0.9)
    state = create_train_state(model, tx, jax.random.key(0), batch["image"][:1])
    step = make_train_step(
        regularized_classifier_loss(model, kind="score_matching"), tx, donate=False
    )
    out["resnet18 Taylor score-matching step"] = {
        "jax": _guarded(jax_breakdown, step, state, batch, jax.random.key(1))
    }
    for name in ("cnn", "user_cnn", "user_cnn_fast"):
        log(f"breakdown: {name} IG, chunk_size 16")
        model, v, x, t, _ = attribution.setup(name, twin=False)
        fn = jax.jit(
            functools.partial(
                integrated_gradients,
                attribution.logit_fn_of(name, model),
                steps=cfg["ig_steps"],
                rule="gauss_legendre",
                chunk_size=16,
            )
        )
        out[f"{name} IG (64 steps, chunk 16)"] = {"jax": _guarded(jax_breakdown, fn, v, x, t)}
    return out


def _best_rates(m: dict, method: str) -> tuple[float, float]:
    """Examples per second of jaxgrad and Captum for one method, each at its best setting."""
    if method == "gradient":
        return m["jaxgrad_examples_per_s"], m["captum_examples_per_s"]
    return (
        max(v["examples_per_s"] for v in m["jaxgrad"].values()),
        max(v["examples_per_s"] for v in m["captum"].values()),
    )


def summary(result) -> list[dict]:
    """The headline rows: jaxgrad's figure, the peer's, and the ratio (higher is jaxgrad faster)."""
    rows = []
    for name, r in result["train_step"].items():
        rows.append(
            {
                "work": f"{name} training step, batch {result['config']['train_batch']}",
                "jaxgrad": f"{r['jax']['examples_per_s']:.0f} ex/s",
                "peer": f"{r['torch']['examples_per_s']:.0f} ex/s" if "torch" in r else "",
                "ratio": r.get("ratio_jax_over_torch"),
            }
        )
    for name, r in result["score_matching"].items():
        for kind in ("score_matching_taylor", "score_matching_hutchinson_1probe"):
            rows.append(
                {
                    "work": f"{name} {kind} step / cross-entropy step (jaxgrad; cost, lower "
                    "is better)",
                    "jaxgrad": f"{r[kind]['ratio_to_cross_entropy']:.2f}x",
                    "peer": "",
                    "ratio": None,
                }
            )
    for part in ("attribution", "latency"):
        for name, r in result.get(part, {}).items():
            for method in ("gradient", "integrated_gradients", "smoothgrad"):
                ours, theirs = _best_rates(r[method], method)
                if part == "attribution":
                    work = f"{name} {method}, batch {r['batch']} (best chunk each)"
                    ours_s, theirs_s = f"{ours:.1f} ex/s", f"{theirs:.1f} ex/s"
                else:  # one image: the latency of a call
                    work = f"{name} {method}, one image (latency; best chunk each)"
                    ours_s, theirs_s = f"{1e3 / ours:.1f} ms", f"{1e3 / theirs:.1f} ms"
                rows.append(
                    {
                        "work": work,
                        "jaxgrad": ours_s,
                        "peer": f"{theirs_s} (Captum)",
                        "ratio": r[method]["ratio"],
                    }
                )
    return rows


def to_markdown(result) -> str:
    m = result["machine"]
    tiny = result["config"].get("tiny")
    lines = [
        f"# jaxgrad benchmark suite: {result['machine_name']}"
        + (" (tiny: one timed call each, a smoke test whose figures are noise)" if tiny else ""),
        "",
        f"{m['device_kind']} ({m['backend']}, {m['devices']} device(s)), JAX {m['jax']}; "
        f"peer: {result['peer']}. Ratio = jaxgrad's throughput over the peer's (above 1: "
        "jaxgrad is faster).",
        "",
        "| work | jaxgrad | peer | ratio |",
        "|---|---:|---:|---:|",
    ]
    for r in result["summary"]:
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.2f}x"
        lines.append(f"| {r['work']} | {r['jaxgrad']} | {r['peer']} | {ratio} |")
    for name, r in result["train_step"].items():
        if "share_of_dense_peak" in r["jax"]:
            lines.append(
                f"\n{name} training step: {r['jax']['tflop_per_s']:.2f} TFLOP/s (XLA's FLOP "
                f"count), {100 * r['jax']['share_of_dense_peak']:.2f}% of the chip's "
                f"{r['jax']['peak']}."
            )
    rows = result.get("conv_kernels", [])
    if rows and "torch_forward_ms" in rows[0]:
        lines += [
            "",
            "## Each convolution alone (XLA against PyTorch, same shapes and device)",
            "",
            "| convolution | shape | XLA forward ms | PyTorch forward ms | XLA fwd+bwd ms "
            "| PyTorch fwd+bwd ms | fwd+bwd ratio |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {r['conv']} | {r['shape']} | {r['xla_forward_ms']:.2f} | "
            f"{r['torch_forward_ms']:.2f} | {r['xla_forward_backward_ms']:.2f} | "
            f"{r['torch_forward_backward_ms']:.2f} | {r['forward_backward_ratio']:.2f}x |"
            for r in rows
        ]
    lines += ["", "## Where the time goes", ""]
    for name, part in result["breakdown"].items():
        torch_part = part.get("torch")
        if torch_part and "error" in torch_part:
            torch_part = None
        lines.append(markdown(name, part["jax"], torch_part))
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true", help="small batches and few steps (CI)")
    p.add_argument("--out-dir", default=os.path.join(os.path.dirname(__file__), "results"))
    p.add_argument("--skip-torch", action="store_true", help="time jaxgrad alone")
    a = p.parse_args()
    backend = jax.default_backend()
    accel = backend != "cpu"
    cfg = TINY if a.tiny else FULL
    steps = 1 if a.tiny else (20 if accel else 5)
    repeats = 1 if a.tiny else (10 if accel else 3)
    chunks = [None, 2] if a.tiny else ([None, 16] if accel else [None, 16, 4])
    device, peer = torch_device(backend, a.skip_torch)
    t0 = time.perf_counter()
    result = {
        "machine": {**machine_info(), "device_kind": jax.devices()[0].device_kind},
        "machine_name": machine_name(),
        "peer": peer,
        "config": {
            **cfg,
            "tiny": a.tiny,
            "timed_steps": steps,
            "repeats": repeats,
            "chunks": chunks,
        },
    }
    if device:
        import torch

        result["machine"]["torch"] = torch.__version__
    os.makedirs(a.out_dir, exist_ok=True)
    stem = os.path.join(a.out_dir, f"suite_{result['machine_name']}{'_tiny' if a.tiny else ''}")

    def save():  # after each part, so that a run cut short keeps what it measured
        with open(stem + ".json", "w") as f:
            f.write(json.dumps(result, indent=2) + "\n")

    result["train_step"] = bench_train(cfg, steps, device, peak_flops())
    save()
    log("convolutions alone")
    result["conv_kernels"] = bench_conv_kernels(cfg["train_batch"], max(3, steps), device)
    save()
    log("score matching")
    result["score_matching"] = bench_score_matching(cfg, steps if accel else min(steps, 3))
    save()
    try:
        import captum  # noqa: F401

        have_captum = device is not None
    except ImportError:
        have_captum = False
    if have_captum:
        log("attribution")
        result["attribution"] = bench_attribution(cfg, repeats, chunks, device)
        save()
        log("attribution, one image")
        result["latency"] = bench_attribution(  # one image: an interactive call's latency
            cfg, 1 if a.tiny else 10, chunks, device, models=cfg["latency_models"], batch=1
        )
    else:
        result["attribution_skipped"] = "Captum or a PyTorch device is missing"
    save()
    result["breakdown"] = breakdowns(cfg, device, a.tiny)
    result["summary"] = summary(result)
    result["seconds"] = time.perf_counter() - t0
    save()
    text = to_markdown(result)
    with open(stem + ".md", "w") as f:
        f.write(text)
    print(text)
    log(f"wrote {stem}.json and {stem}.md in {result['seconds']:.0f} s")


if __name__ == "__main__":
    main()
