"""``--dry_run``: what a full run costs, from its programs compiled ahead of time.

The full-size experiments' mains have a ``plan(config, dry)`` beside their ``run``
(``score_matching``, ``diff_roar``, ``sanity_checks``; ``--dry_run`` of the others says they
have none): it adds each jitted
program of the run (a train step per model, the evaluation step, attributions, evaluations)
to a :class:`DryRun` with abstract inputs of the run's shapes (the full global batch, on the
run's mesh) and the number of times the run calls it. Nothing is initialised, loaded or
executed: programs are lowered and compiled (``jaxgrad.training.compiled_cost``), so a dry
run on a laptop with 8 fake devices sizes a TPU pod's run, and a dry run on the pod checks
that every program fits its memory before hours are spent.

``dry_run.json`` holds, per program, FLOPs per call (XLA's ``cost_analysis``; the per-device
figure times the devices for sharded programs), calls, total FLOPs and per-device memory
(``memory_analysis``), then the whole run's FLOPs and a projection of its hours on named
accelerators from their published peak throughput at a stated utilisation. The projection
is a projection: measured step times (``metrics/*.jsonl``, throughput rows) are the truth.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from experiments import report
from jaxgrad.attribution import integrated_gradients
from jaxgrad.sharding import is_main_process
from jaxgrad.training import compiled_cost

# Published dense peak throughput per chip / GPU, FLOP/s: (float32 at JAX's default matmul
# precision, bfloat16). TPUs multiply float32 in bfloat16 passes by default; A100 and H100
# use TF32 for float32 matmuls and convolutions by default.
ACCELERATORS = {
    "TPU v4-8 (4 chips)": (4, 275e12, 275e12),
    "TPU v5e-8 (8 chips)": (8, 197e12, 197e12),
    "1x A100 (SXM)": (1, 156e12, 312e12),
    "1x H100 (SXM)": (1, 494.7e12, 989.4e12),
}
UTILISATION = 0.3  # assumed model-FLOPs utilisation of the projection


class DryRun:
    """Collects the compiled programs of one experiment run.

    Args:
      num_devices: the devices of the run's mesh (sharded programs count FLOPs on each).
      dtype: the computation dtype (``"float32"`` or ``"bfloat16"``) for the projection.
      experiment: the run's name (``score_matching:cifar100``) for tables.
    """

    def __init__(self, num_devices: int, dtype: str = "float32", experiment: str = ""):
        self.num_devices = num_devices
        self.dtype = dtype
        self.experiment = experiment
        self.programs: list[dict[str, Any]] = []

    def add(
        self,
        name: str,
        fn,
        *args: Any,
        calls: int,
        sharded: bool = False,
        note: str = "",
        unlooped: dict[str, Any] | None = None,
        flops_fn=None,
        **kw,
    ) -> dict[str, Any]:
        """Compiles ``fn(*args, **kw)`` and records it as called ``calls`` times in the run.

        Args:
          name: the program's name in ``dry_run.json``.
          fn, args, kw: the jitted program and its (abstract) arguments.
          calls: how many times the run calls it.
          sharded: the program runs on every device of the mesh (its per-device FLOPs are
            multiplied by the device count); otherwise on one device.
          note: a remark kept with the row.
          unlooped: keyword arguments that remove the program's loops (e.g.
            ``{"chunk_size": None}``): XLA counts a loop body once, so the FLOPs come from
            a second compilation with these, the memory from the run's own program.
          flops_fn: the same computation without loops as another jitted function (same
            arguments), for the FLOP count when ``fn`` has loops.
        """
        cost = compiled_cost(fn, *args, **kw)
        if cost["loops"] and (unlooped is not None or flops_fn is not None):
            if flops_fn is not None:
                flat, how = compiled_cost(flops_fn, *args, **kw), "its loops unrolled"
            else:
                flat, how = compiled_cost(fn, *args, **{**kw, **unlooped}), f"{unlooped}"
            cost.update(flops=flat["flops"], loops=flat["loops"], flops_exact=flat["flops_exact"])
            note = (note + "; " if note else "") + f"FLOPs compiled with {how}"
        devices = self.num_devices if sharded else 1
        per_call = cost["flops"] * devices
        row = {
            "name": name,
            "calls": int(calls),
            "devices": devices,
            "sharded": sharded,
            "flops_per_call": per_call,
            "flops_per_call_per_device": cost["flops"],
            "total_flops": per_call * calls,
            "memory_per_device": cost["memory"],
            "loops": cost["loops"],
            "rng_loops": cost["rng_loops"],
            "flops_exact": cost["flops_exact"],
            "compile_seconds": cost["compile_seconds"],
        }
        if note:
            row["note"] = note
        self.programs.append(row)
        peak = cost["memory"].get("peak_bytes", 0) / 2**30
        loops = f"; loop bodies counted once, trip counts {cost['loops']}" if cost["loops"] else ""
        print(
            f"compiled {name}: {per_call / 1e9:,.2f} GFLOP per call x {calls:,} calls, "
            f"{peak:.2f} GiB per device ({cost['compile_seconds']:.1f} s{loops})",
            flush=True,
        )
        return row

    def summary(self) -> dict[str, Any]:
        """The run's totals and the projection (see :data:`ACCELERATORS`).

        Sharded programs (training and evaluation steps) spread over every chip of an
        accelerator; the others (measurements on one device's worth of data) take one
        chip's time whatever the slice.
        """
        total = sum(p["total_flops"] for p in self.programs)
        peak = max((p["memory_per_device"].get("peak_bytes", 0) for p in self.programs), default=0)
        projection = {}
        for name, (chips, f32, bf16) in ACCELERATORS.items():
            chip = (bf16 if self.dtype == "bfloat16" else f32) * UTILISATION
            seconds = sum(
                p["total_flops"] / (chip * (chips if p["sharded"] else 1)) for p in self.programs
            )
            projection[name] = {"hours": seconds / 3600, "flops_per_second_per_chip": chip}
        return {
            "total_flops": total,
            "max_peak_bytes_per_device": peak,
            "inexact_programs": [p["name"] for p in self.programs if not p["flops_exact"]],
            "projection": {
                "assumptions": (
                    f"projection, not a measurement: each program's FLOPs / (published dense "
                    f"peak x {UTILISATION:.0%} utilisation), over every chip for sharded "
                    f"programs (perfect data-parallel scaling) and one chip for the others; "
                    f"{self.dtype} at JAX's default precision (TPU: bfloat16 passes; "
                    "A100/H100: TF32 for float32)"
                ),
                "utilisation": UTILISATION,
                "accelerators": projection,
            },
        }

    def write(self, workdir: str | Path, config: ml_collections.ConfigDict) -> Path:
        """Writes ``dry_run.json`` into ``workdir`` and prints the totals."""
        workdir = report.workdir_path(workdir)
        out = {
            "experiment": self.experiment,
            "devices": [str(d) for d in jax.devices()[: self.num_devices]],
            "platform": jax.devices()[0].platform,
            "num_devices": self.num_devices,
            "dtype": self.dtype,
            "config": config.to_dict(),
            "programs": self.programs,
            **self.summary(),
        }
        path = workdir / "dry_run.json"
        if is_main_process():
            workdir.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(out, indent=2, default=str) + "\n")
        hours = ", ".join(
            f"{k}: {v['hours']:.2f} h" for k, v in out["projection"]["accelerators"].items()
        )
        print(
            f"dry run: {len(self.programs)} programs, {out['total_flops']:.3e} FLOPs in all, "
            f"at most {out['max_peak_bytes_per_device'] / 2**30:.2f} GiB per device; "
            f"projected ({UTILISATION:.0%} utilisation): {hours}",
            flush=True,
        )
        return path


def abstract_batch(batch_size: int, image_shape: tuple[int, ...]) -> dict[str, Any]:
    """Shapes of a training batch: ``image``, ``label`` and ``mask``."""
    return {
        "image": jax.ShapeDtypeStruct((batch_size, *image_shape), jnp.float32),
        "label": jax.ShapeDtypeStruct((batch_size,), jnp.int32),
        "mask": jax.ShapeDtypeStruct((batch_size,), jnp.float32),
    }


def abstract_images(n: int, image_shape: tuple[int, ...]) -> tuple[Any, Any]:
    """Shapes of ``n`` images and their labels."""
    return (
        jax.ShapeDtypeStruct((n, *image_shape), jnp.float32),
        jax.ShapeDtypeStruct((n,), jnp.int32),
    )


def integrated_gradients_program(logit_fn):
    """IG of ``logit_fn`` jitted as ``fn(v, x, t, k, *, steps, chunk_size)`` for :meth:`DryRun.add`.

    ``chunk_size`` is static, so ``unlooped={"chunk_size": None}`` compiles the loop-free
    program whose FLOPs XLA counts whole.
    """
    return jax.jit(
        lambda v, x, t, k, steps, chunk_size: integrated_gradients(
            logit_fn, v, x, t, steps=steps, chunk_size=chunk_size
        ),
        static_argnames=("steps", "chunk_size"),
    )


def abstract_key() -> Any:
    """The shape of a PRNG key."""
    return jax.eval_shape(lambda: jax.random.key(0))


def cost_table(paths: list[str]) -> str:
    """A Markdown table "what a full run costs" from ``dry_run.json`` files (the README's)."""
    runs = [json.loads(report.workdir_path(p).read_text()) for p in paths]
    names = list(runs[0]["projection"]["accelerators"]) if runs else []
    head = ["run", "FLOPs", "peak memory per device", *(f"{n}, hours" for n in names)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in runs:
        c = r["config"]
        variant = f"`{r.get('experiment', '')}` ({c['data']['source']}), {r['dtype']}"
        hours = [f"{r['projection']['accelerators'][n]['hours']:.3g}" for n in names]
        peak = f"{r['max_peak_bytes_per_device'] / 2**30:.2f} GiB"
        lines.append(f"| {variant} | {r['total_flops']:.2e} | {peak} | " + " | ".join(hours) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    if len(sys.argv) < 2:
        sys.exit("usage: python -m experiments.dry_run WORKDIR/dry_run.json [...]: the cost table")
    print(cost_table(sys.argv[1:]))
