"""The benchmark suite's accelerator path and its per-op breakdown, on the CPU (so neither rots)."""

from __future__ import annotations

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
sys.path.insert(0, BENCH)

import _profile  # noqa: E402


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
    assert len(out["top_ops"]) <= 5
    assert all(o["ms"] >= 0 for o in out["top_ops"])
    text = _profile.markdown("two convs", out, None)
    assert "| conv forward |" in text


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
    assert result["score_matching"]["cnn"]["score_matching_taylor"]["ratio_to_cross_entropy"] > 1
    ratios = [r["ratio"] for r in result["summary"] if r["ratio"] is not None]
    assert len(ratios) == 2 + 3 * 3 and all(np.isfinite(ratios)) and min(ratios) > 0
    part = result["breakdown"]["resnet18 training step"]
    cats = {c["category"] for c in part["jax"]["categories"]}
    assert {"conv forward", "conv weight-gradient", "conv input-gradient"} <= cats
    assert any("convolution" in o["op"] for o in part["torch"]["top_ops"])
    assert "### resnet18 training step" in report and "| PyTorch op |" in report
    assert proc.stdout.strip().startswith("# jaxgrad benchmark suite: cpu")
