"""The benchmark suite's accelerator path and its per-op breakdown, on the CPU (so neither rots)."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
# Loaded by path: benchmarks/ stays off sys.path (its module names are generic).
_spec = importlib.util.spec_from_file_location("jaxgrad_bench_profile", f"{BENCH}/_profile.py")
_profile = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_profile)


def _conv(x, w, stride=1):
    return jax.lax.conv_general_dilated(
        x, w, (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def _two_conv_loss(params, x):
    h = jax.nn.relu(_conv(x, params["w1"], stride=2))
    return jnp.sum(_conv(h, params["w2"]) ** 2) + jnp.sum(params["dense"] @ h.reshape(-1))


def _program():
    rng = np.random.default_rng(0)
    params = {
        "w1": jnp.asarray(rng.normal(size=(3, 3, 2, 4)), jnp.float32),
        "w2": jnp.asarray(rng.normal(size=(3, 3, 4, 4)), jnp.float32),
        "dense": jnp.asarray(rng.normal(size=(3, 4 * 4 * 4 * 2)), jnp.float32),
    }
    x = jnp.asarray(rng.normal(size=(2, 8, 8, 2)), jnp.float32)
    return jax.jit(jax.grad(_two_conv_loss, argnums=(0, 1))), params, x


def test_every_convolution_of_a_backward_pass_is_classified_by_its_role():
    # Two convolutions, differentiated with respect to both kernels and the input: 2 forward,
    # 2 weight-gradient and 2 input-gradient convolutions, wherever XLA fuses them.
    fn, params, x = _program()
    comps, instrs = _profile._parse(fn.lower(params, x).compile().as_text())
    roles = []
    for body in comps.values():
        for name, opcode, rest in body:
            if opcode == "convolution":
                roles.append(_profile._category(opcode, rest, name, comps))
    assert sorted(roles) == sorted(
        ["conv forward"] * 2 + ["conv weight-gradient"] * 2 + ["conv input-gradient"] * 2
    )
    # The fusion that holds a convolution takes the convolution's role.
    fused = [
        _profile._category(op, rest, name, comps)
        for name, (op, rest) in instrs.items()
        if op == "fusion" and "convolution" in {o for _, o, _ in _called(comps, rest)}
    ]
    assert all(role.startswith("conv ") for role in fused)


def _called(comps, rest):
    m = _profile._CALLS.search(rest)
    return comps.get(m.group(1), []) if m else []


def test_the_breakdown_accounts_for_the_program_s_operations():
    fn, params, x = _program()
    out = _profile.jax_breakdown(fn, params, x, steps=2, top=5)
    assert "error" not in out, out
    shares = [c["share"] for c in out["categories"]]
    assert math.isclose(sum(shares), 1.0, rel_tol=1e-9)
    assert math.isclose(sum(c["ms"] for c in out["categories"]), out["ms_per_call"], rel_tol=1e-9)
    assert {c["category"] for c in out["categories"]} >= {"conv forward", "conv weight-gradient"}
    assert out["wall_ms_per_call"] > 0 and out["coverage"] > 0
    assert len(out["top_ops"]) <= 5
    assert all(o["ms"] >= 0 for o in out["top_ops"])
    text = _profile.markdown("two convs", out, None)
    assert "| conv forward |" in text


# What XLA:GPU writes for a training step: library calls instead of convolutions and dots,
# and a multi-output fusion whose long tuple type carries /*index=5*/ comments.
GPU_HLO = """
%fused_computation.1 (param_0: f32[8,16]) -> (f32[8,16], f32[8,16], f32[8,16], f32[8,16], f32[8,16], f32[8,16]) {
  %param_0 = f32[8,16]{1,0} parameter(0)
  %tanh.1 = f32[8,16]{1,0} tanh(%param_0), metadata={op_name="jit(step)/tanh"}
  ROOT %tuple.1 = (f32[8,16]{1,0}, f32[8,16]{1,0}, f32[8,16]{1,0}, f32[8,16]{1,0}, f32[8,16]{1,0}, /*index=5*/f32[8,16]{1,0}) tuple(%tanh.1, %tanh.1, %tanh.1, %tanh.1, %tanh.1, /*index=5*/%tanh.1)
}

ENTRY %main.9 (p0: f32[8,32,32,16], p1: f32[3,3,16,16]) -> f32[3,3,16,16] {
  %p0 = f32[8,32,32,16]{3,2,1,0} parameter(0)
  %p1 = f32[3,3,16,16]{3,2,1,0} parameter(1)
  %cudnn-conv.1 = (f32[8,32,32,16]{3,2,1,0}, u8[0]{0}) custom-call(%p0, %p1), window={size=3x3 pad=1_1x1_1}, dim_labels=b01f_01io->b01f, custom_call_target="__cudnn$convForward", metadata={op_name="jit(step)/jvp(CNN)/conv_general_dilated"}
  %cudnn-conv.2 = (f32[8,32,32,16]{3,2,1,0}, u8[0]{0}) custom-call(%p0, %p1), window={size=3x3 pad=1_1x1_1}, dim_labels=b01f_01io->b01f, custom_call_target="__cudnn$convBackwardInput", metadata={op_name="jit(step)/transpose(jvp(CNN))/conv_general_dilated"}
  %cudnn-conv.3 = (f32[3,3,16,16]{3,2,1,0}, u8[0]{0}) custom-call(%p0, %p0), window={size=3x3 pad=1_1x1_1}, dim_labels=b01f_01io->b01f, custom_call_target="__cudnn$convBackwardFilter", metadata={op_name="jit(step)/transpose(jvp(CNN))/conv_general_dilated"}
  %cublas-gemm.1 = (f32[8,16]{1,0}, s8[0]{0}) custom-call(%p0, %p1), custom_call_target="__cublas$lt$matmul", metadata={op_name="jit(step)/transpose(jvp(CNN))/dot_general"}
  %input_tanh_fusion = (f32[8,16]{1,0}, f32[8,16]{1,0}, f32[8,16]{1,0}, f32[8,16]{1,0}, f32[8,16]{1,0}, /*index=5*/f32[8,16]{1,0}) fusion(%p0), kind=kInput, calls=%fused_computation.1
  ROOT %get-tuple-element.3 = f32[3,3,16,16]{3,2,1,0} get-tuple-element(%cudnn-conv.3), index=0
}
"""


def test_gpu_library_calls_and_long_tuples_are_classified():
    comps, instrs = _profile._parse(GPU_HLO)
    roles = {
        name: _profile._category(*instrs[name], name, comps)
        for name in ("cudnn-conv.1", "cudnn-conv.2", "cudnn-conv.3", "cublas-gemm.1")
    }
    assert roles == {
        "cudnn-conv.1": "conv forward",
        "cudnn-conv.2": "conv input-gradient",
        "cudnn-conv.3": "conv weight-gradient",
        "cublas-gemm.1": "dot backward",
    }
    assert "input_tanh_fusion" in instrs  # its 6-tuple type did not hide it
    assert _profile._category(*instrs["input_tanh_fusion"], "input_tanh_fusion", comps) == (
        "elementwise"
    )


def test_device_events_count_each_operation_once():
    # A GPU trace holds the host's launch events, the stream's kernels (hlo_op in args) and,
    # where the profiler derived it, an "XLA Ops" line: one of them is counted, never two.
    meta = [
        {"ph": "M", "name": "process_name", "pid": 1, "args": {"name": "/device:GPU:0"}},
        {"ph": "M", "name": "process_name", "pid": 2, "args": {"name": "/host:CPU"}},
        {"ph": "M", "name": "thread_name", "pid": 1, "tid": 5, "args": {"name": "Stream #13"}},
        {"ph": "M", "name": "thread_name", "pid": 1, "tid": 7, "args": {"name": "XLA Ops"}},
    ]
    host = {"ph": "X", "pid": 2, "tid": 1, "name": "cudnn-conv.1", "dur": 9.0}
    kernel = {
        "ph": "X",
        "pid": 1,
        "tid": 5,
        "name": "sm90_xmma_fprop",
        "dur": 4.0,
        "args": {"hlo_op": "cudnn-conv.1"},
    }
    op_line = {"ph": "X", "pid": 1, "tid": 7, "name": "cudnn-conv.1", "dur": 4.5}
    assert _profile._device_events(meta + [host, kernel, op_line]) == [op_line]
    assert _profile._device_events(meta[:3] + [host, kernel]) == [kernel]
    cpu = [{"ph": "X", "pid": 3, "tid": 1, "name": "ynn_fusion.1", "dur": 2.0}]
    assert _profile._device_events(cpu) == cpu


def test_the_torch_breakdown_names_aten_operators():
    torch = pytest.importorskip("torch")
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3), torch.nn.ReLU(), torch.nn.Flatten())
    x = torch.rand(2, 2, 8, 8)

    def step():
        model.zero_grad()
        model(x).sum().backward()

    out = _profile.torch_breakdown(step, device="cpu", steps=2, top=1000)
    names = {o["op"] for o in out["top_ops"]}
    assert any("convolution" in n for n in names), names
    assert math.isclose(sum(o["share"] for o in out["top_ops"]), 1.0, rel_tol=1e-6)
    assert math.isclose(sum(o["ms"] for o in out["top_ops"]), out["ms_per_call"], rel_tol=1e-6)


@pytest.mark.slow
def test_the_accelerator_path_runs_tiny_on_the_cpu(tmp_path):
    # What `make bench` runs on a GPU or TPU, in its tiny configuration on this CPU.
    env = {**os.environ, "XLA_FLAGS": "", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, "suite.py", "--tiny", "--out-dir", str(tmp_path)],
        cwd=BENCH,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    name = f"suite_cpu{os.cpu_count()}_tiny"
    result = json.loads((tmp_path / f"{name}.json").read_text())
    report = (tmp_path / f"{name}.md").read_text()
    assert result["machine"]["backend"] == "cpu"
    for model in ("cnn", "resnet18"):
        row = result["train_step"][model]
        assert row["jax"]["examples_per_s"] > 0 and row["jax"]["flops_per_step"] > 0
        assert row["ratio_jax_over_torch"] > 0
    assert result["score_matching"]["cnn"]["score_matching_taylor"]["ratio_to_cross_entropy"] > 0
    ratios = [r["ratio"] for r in result["summary"] if r["ratio"] is not None]
    # 2 training steps, 3 methods on 3 models, and the 3 methods on one image (latency)
    assert len(ratios) == 2 + 3 * 3 + 3 and all(np.isfinite(ratios)) and min(ratios) > 0
    assert set(result["latency"]["cnn"]) >= {"gradient", "integrated_gradients", "smoothgrad"}
    assert result["latency"]["cnn"]["batch"] == 1
    part = result["breakdown"]["resnet18 training step"]
    cats = {c["category"] for c in part["jax"]["categories"]}
    assert {"conv forward", "conv weight-gradient", "conv input-gradient"} <= cats
    assert any("convolution" in o["op"] for o in part["torch"]["top_ops"])
    assert "### resnet18 training step" in report and "| PyTorch op |" in report
    assert proc.stdout.strip().startswith("# jaxgrad benchmark suite: cpu")


@pytest.mark.slow
def test_the_metrics_benchmark_runs_tiny_against_captum_and_quantus(tmp_path):
    # benchmarks/metrics.py at CI's size: every metric timed in jaxgrad and its peers.
    env = {**os.environ, "XLA_FLAGS": "", "PYTHONUNBUFFERED": "1"}
    out = tmp_path / "metrics.json"
    proc = subprocess.run(
        [sys.executable, "metrics.py", "--tiny", "--out", str(out)],
        cwd=BENCH,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())["metrics"]
    peers = {
        "infidelity": ["captum"],
        "sensitivity_max": ["captum", "quantus"],
        "avg_sensitivity": ["quantus"],
        "road": ["quantus"],
        "faithfulness_correlation": ["quantus"],
        "pixel_flipping": ["quantus"],
    }
    assert set(rows) == set(peers)
    for name, row in rows.items():
        assert row["jaxgrad_s"] > 0 and len(row["jaxgrad_by_chunk_size"]) == 3, name
        for peer in peers[name]:
            assert row[f"{peer}_s"] > 0 and row[f"ratio_{peer}"] > 0, (name, peer)


@pytest.mark.slow
def test_the_seed_retraining_benchmark_runs_tiny(tmp_path):
    env = {**os.environ, "XLA_FLAGS": "", "PYTHONUNBUFFERED": "1"}
    out = tmp_path / "roar_seeds.json"
    proc = subprocess.run(
        [sys.executable, "roar_seeds.py", "--tiny", "--out", str(out)],
        cwd=BENCH,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (row,) = json.loads(out.read_text())["rows"]
    assert row["seeds"] == 2 and row["speedup"] > 0
    # The same two models either way: their test accuracies agree to an image or so.
    np.testing.assert_allclose(row["accuracy_together"], row["accuracy_one_by_one"], atol=2 / 64)
