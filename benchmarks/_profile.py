"""Where the time goes: per-op breakdowns of one compiled JAX program and of PyTorch's same work.

JAX: the program's optimized HLO (``jitted.lower(*args).compile().as_text()``) names every
operation the runtime executes (a fusion, a convolution, a custom call); ``jax.profiler``
records one event per executed operation under that name (on the CPU as the thunk's name, on
a GPU or TPU as the device event's ``hlo_op``). Each operation is put in a category from what
it computes (a fusion by the heaviest operation inside it):

* ``conv forward``, ``conv input-gradient``, ``conv weight-gradient``: a convolution; the
  weight gradient is the one whose window spans the activations (a window larger than its
  output's spatial size, which is the kernel's), the input gradient one that JAX's transpose
  rules made (``transpose(jvp(...))`` in its metadata) with the kernel as its window;
* ``dot forward`` / ``dot backward``;
* ``pooling`` (``reduce-window``, ``select-and-scatter``);
* ``reduction``: reductions (BatchNorm's batch statistics, losses, norms);
* ``layout (transpose/copy)``: transposes and copies XLA inserts to change layouts;
* ``elementwise``: everything else that computes (activations, BatchNorm's normalisation,
  the optimizer's update).

Library calls (cuDNN and cuBLAS on a GPU) take their role from their target's name. A loop's
(``while``) own event is left out: its body's operations are counted one by one. The role of
a convolution is a heuristic: a VALID convolution whose kernel is larger than its output (a
convolution used as a dense head) reads as a weight gradient, and the forward convolutions of
a double-backprop program's backward pass (score matching) as input gradients.

PyTorch: ``torch.profiler``'s self time per aten operator (self device time on a GPU).
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import re
import tempfile
import time

import jax
import numpy as np

_INSTR = re.compile(r"^\s*(?:ROOT\s+)?%(\S+)\s*=\s*(\([^=]*?\)|\S+)\s+([\w\-]+)\((.*)$")
_HEADER = re.compile(r"^(?:ENTRY\s+)?%(\S+)\s.*\{\s*$")
_CALLS = re.compile(r"(?:calls|to_apply|body|condition)=%([\w.\-]+)")
_WINDOW = re.compile(r"window=\{size=([\dx]+)")
_SHAPE = re.compile(r"\[([\d,]*)\]")
_LABELS = re.compile(r"dim_labels=\w+_\w+->(\w+)")
_OPNAME = re.compile(r'op_name="([^"]*)"')

_PRIORITY = (
    "convolution",
    "dot",
    "select-and-scatter",
    "reduce-window",
    "reduce",
    "scatter",
    "gather",
    "sort",
)


def _parse(hlo: str) -> tuple[dict, dict]:
    """(computation name -> [(instr, opcode, rest)], instr name -> (opcode, rest))."""
    comps, instrs, current = {}, {}, None
    hlo = re.sub(r"/\*.*?\*/", "", hlo)  # XLA's /*index=5*/ comments in long tuples
    for line in hlo.splitlines():
        head = _HEADER.match(line)
        if head and "=" not in line.split("(")[0]:
            current = comps.setdefault(head.group(1), [])
            continue
        m = _INSTR.match(line)
        if m and current is not None:
            name, shape, opcode, rest = m.group(1), m.group(2), m.group(3), m.group(4)
            current.append((name, opcode, shape + " " + rest))
            instrs[name] = (opcode, shape + " " + rest)
    return comps, instrs


def _conv_category(rest: str) -> str:
    window = _WINDOW.search(rest)
    labels = _LABELS.search(rest)
    shape = _SHAPE.search(rest)
    if window and labels and shape and shape.group(1):
        dims = [int(d) for d in shape.group(1).split(",")]
        spatial = [dims[i] for i, c in enumerate(labels.group(1)) if c.isdigit()]
        win = [int(s) for s in window.group(1).split("x")]
        if int(np.prod(win)) > int(np.prod(spatial)):
            return "conv weight-gradient"
    op_name = (_OPNAME.search(rest) or [None, ""])[1]
    return "conv input-gradient" if "transpose(" in op_name else "conv forward"


_TARGET = re.compile(r'custom_call_target="([^"]+)"')
# Library calls XLA makes instead of its own kernels (GPU: cuDNN, cuBLAS; CPU: oneDNN).
_LIBRARY = (
    ("convBackwardFilter", "conv weight-gradient"),
    ("convBackwardInput", "conv input-gradient"),
    ("conv", "conv forward"),  # convForward, convBiasActivationForward, onednn convolution
    ("gemm", "dot"),
    ("matmul", "dot"),
)


def _category(opcode: str, rest: str, name: str, comps: dict, depth: int = 0) -> str:
    target = _TARGET.search(rest) if opcode == "custom-call" else None
    if target:
        for key, category in _LIBRARY:
            if key.lower() in target.group(1).lower():
                if category == "dot":
                    op_name = (_OPNAME.search(rest) or [None, ""])[1]
                    return "dot backward" if "transpose(" in op_name else "dot forward"
                return category
    if opcode == "fusion" or (opcode == "custom-call" and "calls=" in rest):
        called = _CALLS.search(rest)
        body = comps.get(called.group(1), []) if called else []
        ops = {op: r for _, op, r in body}
        for op in _PRIORITY:
            if op in ops:
                return _category(op, ops[op], name, comps, depth + 1)
        if name.startswith(("transpose", "copy")) or set(ops) <= {
            "parameter",
            "transpose",
            "copy",
            "bitcast",
            "reshape",
        }:
            return "layout (transpose/copy)"
        return "elementwise"
    if opcode == "convolution":
        return _conv_category(rest)
    if opcode == "dot":
        op_name = (_OPNAME.search(rest) or [None, ""])[1]
        return "dot backward" if "transpose(" in op_name else "dot forward"
    if opcode in ("reduce-window", "select-and-scatter"):
        return "pooling"
    if opcode in ("reduce", "all-reduce"):
        return "reduction"
    if opcode in ("transpose", "copy", "copy-start", "copy-done"):
        return "layout (transpose/copy)"
    return "elementwise"


def _trace_events(logdir: str) -> list[dict]:
    files = glob.glob(os.path.join(logdir, "**", "*.trace.json.gz"), recursive=True)
    if not files:
        return []
    with gzip.open(files[0]) as f:
        trace = json.load(f)
    return trace["traceEvents"] if isinstance(trace, dict) else trace


def _device_events(events: list[dict]) -> list[dict]:
    """The events that time the program's operations, each once.

    CPU: the thunks' events (named after their HLO instruction). GPU/TPU: the device's
    "XLA Ops" line where the profiler derived one (one event per op), otherwise the device
    streams' kernel events, named by their ``hlo_op``."""
    meta = [e for e in events if e.get("ph") == "M"]
    devices = {
        e["pid"]
        for e in meta
        if e.get("name") == "process_name"
        and re.search(r"/device:(GPU|TPU)", str(e.get("args", {}).get("name", "")))
    }
    timed = [e for e in events if e.get("ph") == "X"]
    if not devices:
        return timed
    ops_lines = {
        (e["pid"], e.get("tid"))
        for e in meta
        if e.get("pid") in devices
        and e.get("name") == "thread_name"
        and "XLA Ops" in str(e.get("args", {}).get("name", ""))
    }
    if ops_lines:
        return [e for e in timed if (e.get("pid"), e.get("tid")) in ops_lines]
    return [e for e in timed if e.get("pid") in devices and (e.get("args") or {}).get("hlo_op")]


def jax_breakdown(fn, *args, steps: int = 2, top: int = 12) -> dict:
    """Per-category and per-op time of ``fn(*args)`` (a jitted or compiled function), per call.

    ``fn`` is compiled (unless it is a ``Compiled`` already) and called once before ``steps``
    profiled calls; it must not donate ``args``. Returns ``{"ms_per_call", "wall_ms_per_call",
    "coverage", "categories": [{category, ms, share}], "top_ops": [...]}``: shares of the time
    the program's own operations took (host bookkeeping excluded). ``coverage`` is that time
    over the wall time: below 1 where the host or idle gaps take time, above 1 on a CPU where
    operations run on several threads at once (their times add up)."""
    if not hasattr(fn, "as_text"):
        fn = fn.lower(*args).compile()
    comps, instrs = _parse(fn.as_text())
    jax.block_until_ready(fn(*args))
    with tempfile.TemporaryDirectory(prefix="jaxgrad-profile-") as logdir:
        with jax.profiler.trace(logdir, create_perfetto_trace=False):
            t0 = time.perf_counter()
            for _ in range(steps):
                jax.block_until_ready(fn(*args))
            wall = (time.perf_counter() - t0) * 1e3 / steps
        events = _trace_events(logdir)
    per_op = collections.Counter()
    for e in _device_events(events):
        name = (e.get("args") or {}).get("hlo_op") or e.get("name", "")
        if name in instrs and instrs[name][0] not in ("while", "conditional", "call"):
            per_op[name] += float(e.get("dur", 0.0)) / 1e3  # microseconds -> ms
    total = sum(per_op.values())
    if not total:
        return {
            "error": "the profiler recorded no operation of this program",
            "events": len(events),
        }
    cats = collections.Counter()
    for name, ms in per_op.items():
        opcode, rest = instrs[name]
        cats[_category(opcode, rest, name, comps)] += ms
    ops = []
    for name, ms in per_op.most_common(top):
        opcode, rest = instrs[name]
        op_names = _OPNAME.findall(rest)
        for callee in _CALLS.findall(rest):
            op_names += [n for _, _, r in comps.get(callee, []) for n in _OPNAME.findall(r)]
        ops.append(
            {
                "op": name,
                "category": _category(opcode, rest, name, comps),
                "ms": ms / steps,
                "share": ms / total,
                "source": collections.Counter(op_names).most_common(1)[0][0] if op_names else "",
            }
        )
    return {
        "ms_per_call": total / steps,
        "wall_ms_per_call": wall,
        "coverage": total / steps / wall,
        "categories": [
            {"category": c, "ms": ms / steps, "share": ms / total} for c, ms in cats.most_common()
        ],
        "top_ops": ops,
    }


def torch_breakdown(step, *, device: str, steps: int = 2, top: int = 12) -> dict:
    """Self time per aten operator of ``step()`` under ``torch.profiler``, per call."""
    import torch
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    cuda = device.startswith("cuda")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    step()
    if cuda:
        torch.cuda.synchronize()
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        if cuda:
            torch.cuda.synchronize()
    rows = []
    for ev in prof.key_averages():
        # Operators only: on CUDA each kernel also has a row of its own, whose time its
        # launching operator's self device time already holds.
        if ev.device_type != DeviceType.CPU:
            continue
        if cuda:
            us = getattr(ev, "self_device_time_total", None)
            if us is None:
                us = ev.self_cuda_time_total
        else:
            us = ev.self_cpu_time_total
        if us > 0:
            rows.append((ev.key, us / 1e3))
    total = sum(ms for _, ms in rows)
    rows.sort(key=lambda r: -r[1])
    return {
        "ms_per_call": total / steps,
        "clock": "self device time" if cuda else "self CPU time",
        "top_ops": [{"op": k, "ms": ms / steps, "share": ms / total} for k, ms in rows[:top]],
    }


def markdown(name: str, jax_part: dict, torch_part: dict | None, rows: int = 8) -> str:
    """The breakdown as Markdown tables (JAX categories, JAX's top ops, PyTorch's top ops)."""
    if "error" in jax_part:
        return f"### {name}\n\n{jax_part['error']}\n"
    out = [
        f"### {name}: {jax_part['ms_per_call']:.2f} ms of operations per call (JAX; "
        f"{jax_part['wall_ms_per_call']:.2f} ms wall, coverage {jax_part['coverage']:.2f})",
        "",
    ]
    out += ["| JAX category | ms | share |", "|---|---:|---:|"]
    out += [
        f"| {c['category']} | {c['ms']:.2f} | {100 * c['share']:.1f}% |"
        for c in jax_part["categories"]
    ]
    out += ["", "| JAX op | category | source | ms | share |", "|---|---|---|---:|---:|"]
    out += [
        f"| {o['op']} | {o['category']} | {o['source'].replace('|', '/')} | {o['ms']:.2f} "
        f"| {100 * o['share']:.1f}% |"
        for o in jax_part["top_ops"][:rows]
    ]
    if torch_part:
        out += [
            "",
            f"PyTorch, {torch_part['ms_per_call']:.2f} ms per call ({torch_part['clock']}; "
            "on a CPU the calling thread's, where JAX's figure adds up its threads):",
            "",
            "| PyTorch op | ms | share |",
            "|---|---:|---:|",
        ]
        out += [
            f"| {o['op']} | {o['ms']:.2f} | {100 * o['share']:.1f}% |"
            for o in torch_part["top_ops"][:rows]
        ]
    return "\n".join(out) + "\n"
