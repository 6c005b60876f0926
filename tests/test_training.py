import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxgrad import sharding as shd
from jaxgrad.data import get_batch, load_dataset
from jaxgrad.models import MnistCNN, linen_logit_fn
from jaxgrad.training import (
    Checkpointer,
    MetricWriter,
    Progress,
    classifier_loss,
    create_train_state,
    cross_entropy,
    evaluate,
    fit,
    make_eval_step,
    make_optimizer,
    make_schedule,
    make_train_step,
    masked_mean,
    read_metrics,
)

REPO = Path(__file__).resolve().parents[1]
WORKER = REPO / "tests" / "workers" / "train_worker.py"


class TinyBN(nn.Module):
    """Conv + BatchNorm + dense: checks batch statistics under data parallelism."""

    @nn.compact
    def __call__(self, x, train=False):
        x = nn.Conv(4, (3, 3))(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
        x = nn.relu(x).reshape(x.shape[0], -1)
        return nn.Dense(10)(x)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "train"), load_dataset("digits", "test")


def run_steps(model, data, devices, num_steps=6, batch_size=64):
    mesh = shd.data_mesh(devices)
    tx = make_optimizer("sgd", 0.05, momentum=0.9, weight_decay=1e-4)
    state = create_train_state(model, tx, jax.random.key(0), data["image"][:1], mesh=mesh)
    step = make_train_step(classifier_loss(model), tx, mesh=mesh)
    losses = []
    for i in range(num_steps):
        batch = shd.shard_batch(
            get_batch(data, i, key=jax.random.key(1), batch_size=batch_size), mesh
        )
        state, metrics = step(state, batch, jax.random.key(2))
        losses.append(float(metrics["loss"]))
    return np.array(losses), state


@pytest.mark.parametrize("model", [MnistCNN(), TinyBN()], ids=["cnn", "batchnorm"])
def test_one_and_eight_devices_give_the_same_losses(model, digits):
    assert jax.device_count() == 8, "tests run with 8 fake CPU devices (conftest / XLA_FLAGS)"
    l1, s1 = run_steps(model, digits[0], jax.devices()[:1])
    l8, s8 = run_steps(model, digits[0], jax.devices())
    np.testing.assert_allclose(l1, l8, rtol=1e-5)
    assert l1[-1] < l1[0]
    for a, b in zip(jax.tree.leaves(s1.variables), jax.tree.leaves(s8.variables), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    # The batch is really split over 8 devices, and the state replicated.
    batch = shd.shard_batch({"x": np.zeros((64, 3))}, shd.data_mesh())
    assert len(batch["x"].addressable_shards) == 8 and batch["x"].addressable_shards[
        0
    ].data.shape == (8, 3)
    assert s8.params["hidden1" if isinstance(model, MnistCNN) else "Conv_0"][
        "kernel"
    ].sharding.is_fully_replicated


def test_train_step_compiles_once_and_donates(digits):
    traces = []
    model = MnistCNN()
    base = classifier_loss(model)

    def counting_loss(*args):
        traces.append(1)
        return base(*args)

    tx = make_optimizer("adam", 1e-3)
    state = create_train_state(model, tx, jax.random.key(0), digits[0]["image"][:1])
    step = make_train_step(counting_loss, tx)
    old = state
    for i in range(3):
        state, _ = step(
            state, get_batch(digits[0], i, key=jax.random.key(1), batch_size=32), jax.random.key(2)
        )
    assert len(traces) == 1
    assert int(state.step) == 3
    assert old.params["fc1"]["kernel"].is_deleted()  # donated


def test_masked_rows_do_not_count(digits):
    model = MnistCNN()
    tx = optax.sgd(0.1)
    state = create_train_state(model, tx, jax.random.key(0), digits[0]["image"][:1])
    loss_fn = classifier_loss(model)
    batch = get_batch(digits[0], 0, key=jax.random.key(1), batch_size=8)
    half = {k: v[:4] for k, v in batch.items()}
    masked = dict(batch, mask=np.array([1, 1, 1, 1, 0, 0, 0, 0], np.float32))
    l_half, _ = loss_fn(state.params, {}, half, jax.random.key(0))
    l_masked, _ = loss_fn(state.params, {}, masked, jax.random.key(0))
    np.testing.assert_allclose(l_half, l_masked, rtol=1e-6)
    np.testing.assert_allclose(masked_mean(jnp.array([1.0, 3.0]), None), 2.0)
    with pytest.raises(ValueError, match="target must have shape"):
        cross_entropy(jnp.zeros((4, 10)), jnp.zeros((3,), jnp.int32))


@pytest.mark.slow  # the whole tour: about 80 s on 2 cores
def test_the_demo_tour_reproduces_each_papers_headline_on_digits(tmp_path):
    from experiments.configs.demo import get_config
    from experiments.demo import run

    config = get_config()
    config.num_devices = 1  # as `make demo`; 8 fake devices on 2 cores can stall XLA's collectives
    results = run(config, tmp_path)
    print("digits test accuracy after the demo's training:", results["test_accuracy"])
    assert results["test_accuracy"] >= 0.95
    assert results["num_test"] == 360
    report = (tmp_path / "report.md").read_text()
    assert f"{results['test_accuracy']:.4f}" in report
    figures = [line for line in report.splitlines() if line.startswith("![")]
    assert len(figures) >= 8
    for line in figures:
        name = line[line.index("(") + 1 : -1]
        assert (tmp_path / name).stat().st_size > 10_000, name
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert rows[-1]["split"] == "eval" and rows[-1]["accuracy"] == pytest.approx(
        results["test_accuracy"]
    )
    assert json.loads((tmp_path / "config.json").read_text())["model"]["name"] == "cnn"
    assert Checkpointer(tmp_path / "checkpoints").latest_step() == results["steps"]
    # The shift: same classifier, the class's gradient replaced.
    shift = results["shift"]
    assert shift["same_predictions"] and shift["softmax_max_abs_diff"] <= 1e-6
    assert shift["cosine_to_map_before"] < 0.5 and shift["cosine_to_map_after"] > 0.99
    # Score matching: the data at peaks of the implicit density (ratio below 1 under noise),
    # the baseline's noisy inputs more probable than the data (above 1), as in the paper.
    sm = results["score_matching"]
    assert sm["score_matching"]["density_ratio"][-1] < 1.0 < sm["none"]["density_ratio"][-1]
    assert sm["score_matching"]["test_accuracy"] >= 0.85
    # The note: absolute maps of gradient x input / IG stay correlated after full
    # randomization, signed ones do not, spearman_nz in between.
    by = {(r["stage"], r["method"], r["metric"]): r["mean"] for r in results["sanity"]["table"]}
    last = results["sanity"]["stages"][-1]
    for m in ("gradient_x_input", "integrated_gradients"):
        signed, absolute = by[(last, m, "spearman")], by[(last, m, "spearman_abs")]
        nz = by[(last, m, "spearman_nz")]
        assert abs(signed) < 0.2 and absolute > 0.8 and signed < nz < absolute
    # Pixel perturbation: the gradient-based rankings find pixels the model relies on.
    methods = results["methods"]
    for m in ("gradient", "integrated_gradients", "smoothgrad"):
        assert methods[m]["auc"] < methods["random"]["auc"]
    assert "As in the paper" in report and "did not show" not in report
    assert report.count("the note's picture") == 2 and "not the note's picture" not in report


def test_schedules_and_optimizers():
    ms = make_schedule("multistep", 0.1, milestones=(10, 20), gamma=0.1)
    np.testing.assert_allclose(
        [ms(0), ms(9), ms(10), ms(19), ms(20)], [0.1, 0.1, 0.01, 0.01, 0.001], rtol=1e-6
    )
    cos = make_schedule("cosine", 0.1, total_steps=100)
    np.testing.assert_allclose([cos(0), cos(50), cos(100)], [0.1, 0.05, 0.0], atol=1e-7)
    warm = make_schedule("cosine", 0.1, total_steps=110, warmup_steps=10)
    np.testing.assert_allclose(
        [warm(0), warm(5), warm(10), warm(60)], [0.0, 0.05, 0.1, 0.05], atol=1e-7
    )
    wm = make_schedule("multistep", 0.1, milestones=(20,), warmup_steps=10)
    np.testing.assert_allclose([wm(19), wm(20)], [0.1, 0.01], rtol=1e-6)
    # SGD with coupled weight decay: v = m v + (g + wd w); w -= lr v.
    tx = make_optimizer("sgd", 0.1, momentum=0.9, weight_decay=0.01)
    w, g = jnp.array([1.0, -2.0]), jnp.array([0.5, 0.5])
    st = tx.init(w)
    u1, st = tx.update(g, st, w)
    np.testing.assert_allclose(u1, -0.1 * (g + 0.01 * w), rtol=1e-6)
    w1 = w + u1
    u2, _ = tx.update(g, st, w1)
    np.testing.assert_allclose(u2, -0.1 * (0.9 * (g + 0.01 * w) + g + 0.01 * w1), rtol=1e-6)
    for bad, match in [
        (lambda: make_schedule("linear", 0.1), "schedule"),
        (lambda: make_schedule("cosine", 0.1), "total_steps"),
        (lambda: make_optimizer("rmsprop", 0.1), "optimizer"),
        (lambda: make_optimizer("sgd", 0.1, weight_decay=-1), "weight_decay"),
    ]:
        with pytest.raises(ValueError, match=match):
            bad()


def test_checkpointer_saves_every_n_and_keeps_k(tmp_path):
    tree = {"w": jnp.arange(4.0), "step": jnp.array(0)}
    with Checkpointer(tmp_path, save_every=3, keep=2) as ckpt:
        for step in range(1, 11):
            ckpt.save(step, {"w": tree["w"] * step, "step": jnp.array(step)})
    ckpt = Checkpointer(tmp_path, save_every=3, keep=2)
    assert ckpt.all_steps()[-2:] == [6, 9] and len(ckpt.all_steps()) == 2
    restored = ckpt.restore_latest(tree)
    np.testing.assert_array_equal(restored["w"], jnp.arange(4.0) * 9)
    assert Checkpointer(tmp_path / "empty").restore_latest(tree) is None
    with pytest.raises(ValueError, match="save_every"):
        Checkpointer(tmp_path, save_every=0)


def test_metric_writer_and_progress(tmp_path, capsys):
    w = MetricWriter(tmp_path / "m.jsonl")
    w.write(5, {"loss": jnp.array(0.5), "acc": np.float32(0.25)}, split="train")
    w.write(10, {"loss": 0.25})
    assert read_metrics(tmp_path / "m.jsonl") == [
        {"step": 5, "loss": 0.5, "acc": 0.25, "split": "train"},
        {"step": 10, "loss": 0.25},
    ]
    p = Progress(100, examples_per_step=32, every_seconds=0.0)
    time.sleep(0.01)
    p.update(50, {"loss": 1.0})
    out = capsys.readouterr().out
    assert "50/100 (50%)" in out and "step/s" in out and "examples/s" in out and "ETA" in out
    # An iterable of unknown length: the count and the rate, never a made-up total or ETA.
    p = Progress(None, name="attribute", unit="batch", every_seconds=0.0)
    time.sleep(0.01)
    p.update(3)
    out = capsys.readouterr().out
    assert out.startswith("attribute: 3 batches, ") and "batch/s" in out
    assert "ETA" not in out and "%" not in out and "/0" not in out


def test_evaluate_counts_every_example_once(digits):
    model = MnistCNN()
    state = create_train_state(model, optax.sgd(0.1), jax.random.key(0), digits[1]["image"][:1])
    logit_fn = linen_logit_fn(model)
    mesh = shd.data_mesh()
    res = evaluate(
        make_eval_step(logit_fn, mesh=mesh),
        shd.replicate(state.variables, mesh),
        digits[1],
        batch_size=64,
        mesh=mesh,
    )
    logits = logit_fn(state.variables, digits[1]["image"])
    expected = float(np.mean(np.argmax(logits, -1) == digits[1]["label"]))
    assert res["count"] == 360
    np.testing.assert_allclose(res["accuracy"], expected, rtol=1e-6)


def _worker(workdir, *extra, devices=1, **popen):
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    cmd = [sys.executable, str(WORKER), "--workdir", str(workdir), *map(str, extra)]
    return subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO, **popen
    )


def _finish(proc, timeout=300):
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-3000:]
    return out


def _final(workdir, process=0):
    with np.load(Path(workdir) / f"final_{process}.npz") as f:
        return [f[k] for k in sorted(f.files, key=lambda k: int(k.split("_")[1]))]


def test_killed_training_resumes_bit_for_bit(tmp_path):
    steps, every = 40, 10
    ref = _worker(tmp_path / "ref", "--steps", steps, "--checkpoint-every", every)
    _finish(ref)
    # Kill -9 once a checkpoint beyond the first exists, mid-run.
    run = _worker(tmp_path / "run", "--steps", steps, "--checkpoint-every", every, "--sleep", 0.1)
    ckpt_dir = tmp_path / "run" / "checkpoints"
    killed_at = None
    for line in run.stdout:
        if line.startswith("step ") and (ckpt_dir / "20").is_dir():
            killed_at = int(line.split()[1])
            run.send_signal(signal.SIGKILL)
            break
    run.wait(timeout=60)
    assert killed_at is not None and killed_at < steps, "the run ended before it could be killed"
    assert run.returncode == -signal.SIGKILL
    assert not (tmp_path / "run" / "final_0.npz").exists()
    resumed_from = Checkpointer(ckpt_dir).latest_step()
    assert 20 <= resumed_from < steps
    out = _finish(_worker(tmp_path / "run", "--steps", steps, "--checkpoint-every", every))
    first = int(out.split("step ")[1].split()[0])
    assert first == resumed_from + 1  # it resumed rather than restarting
    for a, b in zip(_final(tmp_path / "ref"), _final(tmp_path / "run"), strict=True):
        np.testing.assert_array_equal(a, b)
    # The losses logged after the restart equal the uninterrupted run's, bit for bit.
    ref_rows = {r["step"]: r["loss"] for r in read_metrics(tmp_path / "ref" / "metrics.jsonl")}
    run_rows = {r["step"]: r["loss"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl")}
    assert all(run_rows[s] == ref_rows[s] for s in range(resumed_from + 1, steps + 1))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_train_together_like_one(tmp_path):
    steps = 20
    single = _worker(tmp_path / "single", "--steps", steps)
    _finish(single)
    port = _free_port()
    procs = [
        _worker(
            tmp_path / "multi",
            "--steps",
            steps,
            "--checkpoint-every",
            10,
            "--coordinator",
            f"127.0.0.1:{port}",
            "--num-processes",
            2,
            "--process-id",
            i,
        )
        for i in range(2)
    ]
    outs = [_finish(p) for p in procs]
    assert all("done 2 processes 2 devices" in o for o in outs)
    ref = _final(tmp_path / "single")
    p0, p1 = _final(tmp_path / "multi", 0), _final(tmp_path / "multi", 1)
    for a, b, c in zip(ref, p0, p1, strict=True):
        np.testing.assert_array_equal(b, c)  # both processes hold the same replicated state
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert Checkpointer(tmp_path / "multi" / "checkpoints").latest_step() == steps
    single_loss = [r["loss"] for r in read_metrics(tmp_path / "single" / "metrics.jsonl")]
    multi_loss = [r["loss"] for r in read_metrics(tmp_path / "multi" / "metrics.jsonl")]
    np.testing.assert_allclose(single_loss, multi_loss, rtol=1e-4)


def test_two_processes_each_reading_its_own_shard_train_one_replicated_model(tmp_path):
    steps = 12
    port = _free_port()
    procs = [
        _worker(
            tmp_path / "multi",
            "--steps",
            steps,
            "--coordinator",
            f"127.0.0.1:{port}",
            "--num-processes",
            2,
            "--process-id",
            i,
            "--host-shards",
        )
        for i in range(2)
    ]
    outs = [_finish(p) for p in procs]
    # Each process held half the training split (1,437 // 2), never the whole of it.
    assert all("examples 718" in o and "done 2 processes 2 devices" in o for o in outs)
    p0, p1 = _final(tmp_path / "multi", 0), _final(tmp_path / "multi", 1)
    for b, c in zip(p0, p1, strict=True):
        np.testing.assert_array_equal(b, c)  # one replicated model
    # The batches came from the shards, not from one global order of the whole split (which
    # two processes reproduce exactly as one: the test above).
    _finish(_worker(tmp_path / "single", "--steps", steps))
    single = _final(tmp_path / "single")
    assert any(not np.array_equal(a, b) for a, b in zip(single, p0, strict=True))
    losses = [r["loss"] for r in read_metrics(tmp_path / "multi" / "metrics.jsonl")]
    assert len(losses) == steps and all(np.isfinite(losses)) and losses[-1] < losses[0]


def test_host_local_data_on_one_process_is_the_usual_run(digits, key):
    model = MnistCNN(features=(4, 8), dense=16)
    tx = optax.sgd(0.1)
    step = make_train_step(classifier_loss(model), tx)
    runs = []
    for local in (False, True):
        state = create_train_state(model, tx, key, digits[0]["image"][:1])
        state = fit(
            state,
            step,
            digits[0],
            key=key,
            batch_size=32,
            num_steps=5,
            progress=False,
            host_local=local,
        )
        runs.append(jax.tree.leaves(state.params))
    for a, b in zip(*runs, strict=True):
        np.testing.assert_array_equal(a, b)


def test_shard_batch_rejects_indivisible_batches():
    with pytest.raises(ValueError, match="divisible by the number of devices"):
        shd.shard_batch({"x": np.zeros((6, 2))}, shd.data_mesh())


def test_initialize_distributed_is_a_noop_on_one_host(monkeypatch):
    for var in ("JAXGRAD_COORDINATOR", "TPU_WORKER_HOSTNAMES"):
        monkeypatch.delenv(var, raising=False)
    assert shd.initialize_distributed() is False
    assert shd.is_main_process()


def test_metric_rows_with_nan_are_strict_json_and_read_back_as_floats(tmp_path):
    import json
    import math

    from jaxgrad.training import MetricWriter, read_metrics

    path = tmp_path / "m.jsonl"
    w = MetricWriter(path)
    w.write(3, {"loss": float("nan"), "grad_norm": np.float32(np.inf), "acc": 0.5})
    w.write(4, {"loss": -np.inf, "per_class": [1.0, float("nan")]})
    w.close()
    for line in path.read_text().splitlines():  # strict JSON: no bare NaN / Infinity
        json.loads(line, parse_constant=lambda c: pytest.fail(f"non-standard JSON {c}"))
    rows = read_metrics(path)
    assert math.isnan(rows[0]["loss"]) and rows[0]["grad_norm"] == math.inf
    assert rows[0]["acc"] == 0.5 and rows[1]["loss"] == -math.inf
    assert rows[1]["per_class"][0] == 1.0 and math.isnan(rows[1]["per_class"][1])
