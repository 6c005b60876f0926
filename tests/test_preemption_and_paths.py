"""What a TPU VM run needs: SIGTERM saves and resumes exactly; gs:// workdirs reach epath.

The object store is a local folder behind ``etils.epath.testing.mock_epath`` (no network):
every epath call on ``gs://bucket/...`` is redirected there, so the test sees whether a
writer went through epath (the file appears under the folder) or through the local file
system (it would appear as ``./gs:/bucket/...``).
"""

import os
import signal
import subprocess
import sys
from unittest import mock

import jax
import numpy as np
import optax
import pytest
from etils import epath
from etils.epath import gpath
from etils.epath import testing as epath_testing

from jaxgrad.models import get_model
from jaxgrad.training import (
    Checkpointer,
    MetricWriter,
    Preempted,
    classifier_loss,
    create_train_state,
    fit,
    make_train_step,
    read_metrics,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _problem(key):
    model = get_model("mlp", hidden=(16,))
    rng = np.random.default_rng(0)
    data = {
        "image": rng.random((48, 4, 4, 1), np.float32),
        "label": rng.integers(0, 10, 48).astype(np.int32),
    }
    tx = optax.sgd(0.05, momentum=0.9)
    step = make_train_step(classifier_loss(model), tx)

    def fresh():
        return create_train_state(model, tx, key, data["image"][:1])

    return fresh, step, data


def test_sigterm_during_fit_saves_a_checkpoint_and_the_resumed_run_is_the_uninterrupted_one(
    tmp_path, key
):
    fresh, step, data = _problem(key)
    kw = dict(key=key, batch_size=8, num_steps=12, progress=False, log_every=4)
    uninterrupted = fit(fresh(), step, data, **kw)

    def terminate_at_5(s, _):
        if s == 5:
            os.kill(os.getpid(), signal.SIGTERM)  # as a scheduler would, mid-run

    ckpt = tmp_path / "ckpt"
    with pytest.raises(Preempted, match="step 5") as e:
        fit(
            fresh(),
            step,
            data,
            checkpoint_dir=ckpt,
            checkpoint_every=100,
            on_step=terminate_at_5,
            **kw,
        )
    assert e.value.step == 5
    assert Checkpointer(ckpt).latest_step() == 5  # saved although no save was due
    # The handler was removed again: SIGTERM's disposition is the default one.
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    resumed = fit(fresh(), step, data, checkpoint_dir=ckpt, checkpoint_every=100, **kw)
    assert int(resumed.step) == 12
    for a, b in zip(
        jax.tree.leaves(resumed.params), jax.tree.leaves(uninterrupted.params), strict=True
    ):
        np.testing.assert_array_equal(a, b)


def test_sigterm_during_the_final_evaluation_still_saves_and_raises(tmp_path, key):
    fresh, step, data = _problem(key)

    def evaluate_while_terminated(state):
        os.kill(os.getpid(), signal.SIGTERM)  # arrives after the last step
        return {"accuracy": 0.0}

    ckpt = tmp_path / "ckpt"
    with pytest.raises(Preempted, match="step 6"):
        fit(
            fresh(),
            step,
            data,
            key=key,
            batch_size=8,
            num_steps=6,
            progress=False,
            checkpoint_dir=ckpt,
            checkpoint_every=100,
            eval_fn=evaluate_while_terminated,
        )
    assert Checkpointer(ckpt).latest_step() == 6


@pytest.mark.slow
def test_an_experiment_killed_by_sigterm_exits_143_and_the_same_command_resumes(tmp_path):
    workdir = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "experiments.demo",
        "--config=experiments/configs/demo.py",
        f"--workdir={workdir}",
        "--config.train.epochs=200",
        "--config.train.checkpoint_every=100000",
    ]
    env = {**os.environ, "XLA_FLAGS": ""}
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines = []
    for line in proc.stdout:  # wait until training runs
        lines.append(line)
        if line.startswith("train:"):
            break
    proc.send_signal(signal.SIGTERM)
    out = "".join(lines) + proc.stdout.read()
    assert proc.wait(timeout=120) == 143, out
    assert "preempted (SIGTERM) at step" in out and "Traceback" not in out
    saved = [Checkpointer(workdir / "checkpoints").latest_step()]  # orbax also keeps step 1
    assert 1 < saved[0] < 200 * 23
    # The same command (stopped 20 steps later by max_steps, which leaves the schedule as
    # it is) resumes from the checkpoint and finishes with a report.
    rerun = subprocess.run(
        [*cmd, f"--config.train.max_steps={saved[0] + 20}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert Checkpointer(workdir / "checkpoints").latest_step() == saved[0] + 20
    assert f"train: {saved[0] + 20}/{saved[0] + 20}" in rerun.stdout
    assert (workdir / "report.md").is_file()


@pytest.fixture
def fake_gcs(tmp_path):
    """``gs://`` paths served from ``tmp_path/bucket-root`` through epath's own mock."""
    root = tmp_path / "bucket-root"

    def local(p):
        p = os.fspath(p)
        return str(root) + "/" + p[len("gs://") :] if p.startswith("gs://") else p

    def one(orig, path, *a, **k):
        return orig(local(path), *a, **k)

    def two(orig, src, dst, *a, **k):
        return orig(local(src), local(dst), *a, **k)

    singles = ("open", "exists", "glob", "isdir", "listdir", "makedirs", "mkdir", "remove")
    fns = {name: one for name in (*singles, "rmtree", "stat", "walk")}
    fns.update(copy=two, rename=two, replace=two)
    # With TensorFlow installed epath would pick its gfile backend for gs://; not here.
    with (
        epath_testing.mock_epath(**fns),
        mock.patch.object(gpath, "_is_tf_installed", lambda: False),
    ):
        yield root


def test_metrics_and_tensorboard_go_to_a_gs_workdir_through_epath(fake_gcs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    w = MetricWriter("gs://bucket/run/metrics.jsonl")
    w.write(1, {"loss": 2.0}, split="train")
    w.write(2, {"loss": 1.5}, split="train")  # object stores cannot append: rewritten whole
    w.close()
    assert (fake_gcs / "bucket/run/metrics.jsonl").is_file()
    assert not (tmp_path / "gs:").exists()  # never the local folder ./gs:/
    assert [r["loss"] for r in read_metrics("gs://bucket/run/metrics.jsonl")] == [2.0, 1.5]
    # A resumed run continues the remote file.
    MetricWriter("gs://bucket/run/metrics.jsonl").write(3, {"loss": 1.0})
    assert [r["step"] for r in read_metrics("gs://bucket/run/metrics.jsonl")] == [1, 2, 3]


def test_an_experiments_files_go_to_a_gs_workdir(fake_gcs, tmp_path, monkeypatch):
    import ml_collections

    from experiments import report

    monkeypatch.chdir(tmp_path)
    workdir = report.workdir_path("gs://bucket/exp")
    assert isinstance(workdir, epath.Path) and os.fspath(workdir) == "gs://bucket/exp"
    report.write_config(workdir, ml_collections.ConfigDict({"seed": 0}))
    report.write_json(workdir / "results.json", {"a": np.arange(3)})
    report.curves(workdir / "curves.png", [report.Panel([report.Curve([0, 1], [1, 0], "c")])])
    report.attribution_figure(workdir / "maps.png", np.ones((2, 4, 4, 1)), [np.ones((2, 4, 4, 1))])
    report.write_report(workdir, ["# title"])
    names = {p.name for p in (fake_gcs / "bucket/exp").iterdir()}
    assert names == {"config.json", "results.json", "curves.png", "maps.png", "report.md"}
    assert (fake_gcs / "bucket/exp/curves.png").read_bytes()[:4] == b"\x89PNG"
    assert not (tmp_path / "gs:").exists()


def test_checkpoints_of_a_gs_workdir_are_handed_to_orbax_as_gs_paths():
    import orbax.checkpoint as ocp

    with mock.patch.object(ocp, "CheckpointManager") as manager:
        ckpt = Checkpointer("gs://bucket/run/checkpoints")
    given = manager.call_args.args[0]
    assert isinstance(given, epath.Path) and os.fspath(given) == "gs://bucket/run/checkpoints"
    assert os.fspath(ckpt.directory) == "gs://bucket/run/checkpoints"
    with mock.patch.object(ocp, "CheckpointManager") as manager:
        Checkpointer("relative/checkpoints")  # local paths are made absolute for orbax
    assert os.fspath(manager.call_args.args[0]) == os.path.abspath("relative/checkpoints")


def _nan_after(step_count: int) -> optax.GradientTransformation:
    """SGD whose update at step ``step_count`` (1-based) turns every parameter into NaN."""

    def init(params):
        return {"count": jax.numpy.zeros((), jax.numpy.int32)}

    def update(updates, state, params=None):
        poison = state["count"] == step_count - 1
        updates = jax.tree.map(lambda u: jax.numpy.where(poison, jax.numpy.nan, -0.05 * u), updates)
        return updates, {"count": state["count"] + 1}

    return optax.GradientTransformation(init, update)


def _diverging(key, nan_at):
    model = get_model("mlp", hidden=(16,))
    rng = np.random.default_rng(0)
    data = {
        "image": rng.random((48, 4, 4, 1), np.float32),
        "label": rng.integers(0, 10, 48).astype(np.int32),
    }
    tx = _nan_after(nan_at)
    return (
        create_train_state(model, tx, key, data["image"][:1]),
        make_train_step(classifier_loss(model), tx),
        data,
    )


def _all_finite(tree) -> bool:
    return all(bool(np.all(np.isfinite(np.asarray(x)))) for x in jax.tree.leaves(tree))


def test_a_nan_loss_stops_fit_naming_the_step_and_no_checkpoint_holds_it(tmp_path, key):
    from jaxgrad.training import Diverged

    # The update of step 7 poisons the parameters; step 8's loss is the first NaN metric.
    state, step, data = _diverging(key, nan_at=7)
    ckpt = tmp_path / "ckpt"
    with pytest.raises(Diverged, match="step 8: non-finite grad_norm, loss") as e:
        fit(
            state,
            step,
            data,
            key=key,
            batch_size=8,
            num_steps=60,
            progress=False,
            log_every=4,
            checkpoint_dir=ckpt,
            checkpoint_every=5,
            keep_checkpoints=1,  # a NaN save would have deleted the only finite one
        )
    assert e.value.step == 8 and not np.isfinite(e.value.metrics["loss"])
    c = Checkpointer(ckpt)
    assert c.all_steps() and max(c.all_steps()) <= 7
    assert e.value.last_checkpoint == c.latest_step()
    restored = c.restore_latest(state)
    assert _all_finite(restored.params)


def test_non_finite_parameters_are_never_saved_even_when_the_metrics_were_finite(tmp_path, key):
    from jaxgrad.training import Diverged

    # Step 10's update poisons the parameters; its own loss and gradient were finite, and a
    # checkpoint is due at step 10 before any log row sees the NaN.
    state, step, data = _diverging(key, nan_at=10)
    ckpt = tmp_path / "ckpt"
    with pytest.raises(Diverged, match="step 10: the parameters became non-finite"):
        fit(
            state,
            step,
            data,
            key=key,
            batch_size=8,
            num_steps=30,
            progress=False,
            log_every=100,
            checkpoint_dir=ckpt,
            checkpoint_every=5,
        )
    c = Checkpointer(ckpt)
    assert 5 in c.all_steps() and 10 not in c.all_steps()
    for s in c.all_steps():
        assert _all_finite(c.restore(s, state).params)


def test_a_nan_loss_without_checkpoints_still_stops_at_the_next_log_row(key):
    from jaxgrad.training import Diverged

    state, step, data = _diverging(key, nan_at=3)
    seen = []
    with pytest.raises(Diverged, match="step 4:.*no checkpoint was written"):
        fit(
            state,
            step,
            data,
            key=key,
            batch_size=8,
            num_steps=50,
            progress=False,
            log_every=5,
            on_step=lambda s, _: seen.append(s),
        )
    assert max(seen) == 5  # stopped at the first log row after the NaN


def test_sigint_saves_and_raises_preempted_like_sigterm(tmp_path, key):
    fresh, step, data = _problem(key)
    # Under nohup (CI) SIGINT is ignored, and fit leaves an ignored signal ignored: the
    # test gives the process Python's usual Ctrl-C handler first, and puts back the old one.
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _sigint_run(tmp_path, fresh, step, data, key)
    finally:
        signal.signal(signal.SIGINT, before)


def test_an_ignored_sigint_stays_ignored_during_fit(tmp_path, key):
    fresh, step, data = _problem(key)
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)

    def interrupt_at_2(s, _):
        if s == 2:
            os.kill(os.getpid(), signal.SIGINT)

    try:
        state = fit(
            fresh(),
            step,
            data,
            key=key,
            batch_size=8,
            num_steps=4,
            progress=False,
            checkpoint_dir=tmp_path / "ckpt",
            on_step=interrupt_at_2,
        )
        assert int(state.step) == 4  # the signal changed nothing
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)


def _sigint_run(tmp_path, fresh, step, data, key):
    def interrupt_at_3(s, _):
        if s == 3:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C

    ckpt = tmp_path / "ckpt"
    with pytest.raises(Preempted, match=r"\(SIGINT\) at step 3") as e:
        fit(
            fresh(),
            step,
            data,
            key=key,
            batch_size=8,
            num_steps=10,
            progress=False,
            checkpoint_dir=ckpt,
            checkpoint_every=100,
            on_step=interrupt_at_3,
        )
    assert e.value.signum == signal.SIGINT
    assert Checkpointer(ckpt).latest_step() == 3
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_checkpoint_dir_that_is_a_file_is_refused_before_training(tmp_path, key):
    fresh, step, data = _problem(key)
    path = tmp_path / "not_a_folder"
    path.write_text("x")
    seen = []
    with pytest.raises(ValueError, match="checkpoint_dir .* is a file"):
        fit(
            fresh(),
            step,
            data,
            key=key,
            batch_size=8,
            num_steps=4,
            progress=False,
            checkpoint_dir=path,
            on_step=lambda s, _: seen.append(s),
        )
    assert not seen and path.read_text() == "x"


def test_a_diverging_experiment_exits_non_zero_naming_the_step(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "experiments.demo",
        "--config=experiments/configs/demo.py",
        f"--workdir={tmp_path}",
        "--config.train.learning_rate=1e30",
    ]
    env = {**os.environ, "XLA_FLAGS": ""}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "training diverged at step" in proc.stderr
    assert not (tmp_path / "report.md").exists()


def _three_checkpoints(directory, keep=3):
    import jax.numpy as jnp

    c = Checkpointer(directory, save_every=1, keep=keep)
    for s in (1, 2, 3, 4):
        c.save(s, {"w": jnp.full((256,), float(s)), "b": jnp.arange(5) * s})
    c.close()
    return {"w": jnp.zeros((256,)), "b": jnp.zeros(5, jnp.int32)}


def _files(step_dir):
    return sorted(p for p in step_dir.rglob("*") if p.is_file())


@pytest.mark.parametrize("damage", ["flip_one_byte", "truncate", "garble"])
def test_a_damaged_newest_checkpoint_is_reported_and_the_one_before_is_restored(tmp_path, damage):
    target = _three_checkpoints(tmp_path / "ckpt")
    c = Checkpointer(tmp_path / "ckpt")
    assert c.all_steps() == [2, 3, 4]  # keep=3: step 1 and its hash file are gone
    assert sorted(p.name for p in (tmp_path / "ckpt").glob("*.sha256.json")) == [
        "2.sha256.json",
        "3.sha256.json",
        "4.sha256.json",
    ]
    assert c.verify(4) == []
    victim = max(_files(tmp_path / "ckpt" / "4"), key=lambda p: p.stat().st_size)
    data = bytearray(victim.read_bytes())
    if damage == "flip_one_byte":
        data[len(data) // 2] ^= 0x01
    elif damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data = bytearray(np.random.default_rng(0).integers(0, 256, len(data), np.uint8))
    victim.write_bytes(bytes(data))
    rel = str(victim.relative_to(tmp_path / "ckpt" / "4"))
    assert c.verify(4) == [rel]
    # A reader skips it and leaves it where it is.
    with pytest.warns(UserWarning, match=r"checkpoint step 4: files differ from their hashes"):
        restored = c.restore_latest(target)
    np.testing.assert_array_equal(restored["w"], np.full(256, 3.0))
    np.testing.assert_array_equal(restored["b"], np.arange(5) * 3)
    assert c.all_steps() == [2, 3, 4]
    # A writer (holding the lock) moves it aside, out of the step list, with its hash file.
    writer = Checkpointer(tmp_path / "ckpt", lock=True)
    with pytest.warns(UserWarning, match=r"step 4: .*moved to 4\.corrupt"):
        restored = writer.restore_latest(target)
    np.testing.assert_array_equal(restored["w"], np.full(256, 3.0))
    writer.close()
    c = Checkpointer(tmp_path / "ckpt")
    assert c.all_steps() == [2, 3]
    assert (tmp_path / "ckpt" / "4.corrupt").is_dir()
    assert (tmp_path / "ckpt" / "4.corrupt.sha256.json").is_file()


def test_a_checkpoint_whose_hashes_pass_but_which_does_not_restore_raises_and_stays(tmp_path):
    import jax.numpy as jnp

    _three_checkpoints(tmp_path / "ckpt")
    c = Checkpointer(tmp_path / "ckpt", lock=True)
    wrong = {"w": jnp.zeros((256,)), "extra": jnp.zeros(3)}  # another structure: not corrupt
    with pytest.raises(ValueError):  # orbax: the tree does not match
        c.restore_latest(wrong)
    c.close()
    assert Checkpointer(tmp_path / "ckpt").all_steps() == [2, 3, 4]
    assert not list((tmp_path / "ckpt").glob("*.corrupt*"))


def test_an_unreadable_hash_file_leaves_its_checkpoint_unverified_not_lost(tmp_path):
    target = _three_checkpoints(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "4.sha256.json").write_text('{"default/_METADATA": "ab')  # cut short
    c = Checkpointer(tmp_path / "ckpt")
    with pytest.warns(UserWarning, match="unreadable: step 4 is not verified"):
        restored = c.restore_latest(target)
    np.testing.assert_array_equal(restored["w"], np.full(256, 4.0))


def test_when_no_checkpoint_restores_the_error_names_each_step(tmp_path):
    target = _three_checkpoints(tmp_path / "ckpt", keep=2)
    for step in (3, 4):
        victim = _files(tmp_path / "ckpt" / str(step))[0]
        victim.write_bytes(victim.read_bytes() + b"x")
    c = Checkpointer(tmp_path / "ckpt")
    with pytest.warns(UserWarning), pytest.raises(RuntimeError, match="step 4: .*step 3: "):
        c.restore_latest(target)


def test_fit_resumes_from_the_last_good_checkpoint_after_corruption(tmp_path, key):
    fresh, step, data = _problem(key)
    kw = dict(key=key, batch_size=8, num_steps=12, progress=False, log_every=4)
    uninterrupted = fit(fresh(), step, data, **kw)
    ckpt = tmp_path / "ckpt"
    fit(fresh(), step, data, checkpoint_dir=ckpt, checkpoint_every=4, **{**kw, "num_steps": 8})
    assert Checkpointer(ckpt).all_steps()[-2:] == [4, 8]
    victim = max(_files(ckpt / "8"), key=lambda p: p.stat().st_size)
    raw = bytearray(victim.read_bytes())
    raw[len(raw) // 3] ^= 0x80
    victim.write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match="checkpoint step 8"):
        resumed = fit(fresh(), step, data, checkpoint_dir=ckpt, checkpoint_every=4, **kw)
    # Resumed from step 4 (batches and keys are functions of the step): the same run, and
    # step 8 was saved again beside the corrupt one kept aside.
    assert Checkpointer(ckpt).all_steps()[-2:] == [8, 12] and (ckpt / "8.corrupt").is_dir()
    for a, b in zip(
        jax.tree.leaves(resumed.params), jax.tree.leaves(uninterrupted.params), strict=True
    ):
        np.testing.assert_array_equal(a, b)


def test_a_second_writer_on_a_checkpoint_dir_is_refused_at_once(tmp_path, key):
    fresh, step, data = _problem(key)
    ckpt = tmp_path / "ckpt"
    holder = Checkpointer(ckpt, lock=True)  # another run, still going
    seen = []
    with pytest.raises(RuntimeError, match=r"is in use by process \d+ on .*interleave"):
        fit(
            fresh(),
            step,
            data,
            key=key,
            batch_size=8,
            num_steps=4,
            progress=False,
            checkpoint_dir=ckpt,
            on_step=lambda s, _: seen.append(s),
        )
    assert not seen and holder.all_steps() == []
    holder.close()  # released: the same fit now runs, and releases the lock in turn
    fit(
        fresh(), step, data, key=key, batch_size=8, num_steps=4, progress=False, checkpoint_dir=ckpt
    )
    assert not (ckpt / "LOCK").exists()


def test_a_lock_left_by_a_killed_process_is_taken_over_with_a_warning(tmp_path, key):
    import json
    import socket

    fresh, step, data = _problem(key)
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # its pid now names no process
    lock = {"pid": gone.pid, "host": socket.gethostname(), "time": 0, "token": "x"}
    (ckpt / "LOCK").write_text(json.dumps(lock))
    with pytest.warns(UserWarning, match="taking over the lock"):
        fit(
            fresh(),
            step,
            data,
            key=key,
            batch_size=8,
            num_steps=4,
            progress=False,
            checkpoint_dir=ckpt,
        )
    assert Checkpointer(ckpt).latest_step() == 4


def test_resuming_another_runs_checkpoints_is_refused_naming_the_difference(tmp_path, key):
    fresh, step, data = _problem(key)
    ckpt = tmp_path / "ckpt"
    kw = dict(batch_size=8, num_steps=4, progress=False, checkpoint_dir=ckpt)
    fit(fresh(), step, data, key=key, run_id="lr=0.05", **kw)
    with pytest.raises(ValueError, match="another run .*run_id: 'lr=0.05' there, 'lr=0.1' here"):
        fit(fresh(), step, data, key=key, run_id="lr=0.1", **{**kw, "num_steps": 8})
    with pytest.raises(ValueError, match="another run .*key: "):
        fit(fresh(), step, data, key=jax.random.key(7), run_id="lr=0.05", **kw)
    # The same run, longer, resumes (saying what changed).
    with pytest.warns(UserWarning, match="with changes: num_steps: 4 there, 8 here"):
        state = fit(fresh(), step, data, key=key, run_id="lr=0.05", **{**kw, "num_steps": 8})
    assert int(state.step) == 8


FULL_DISK = """
import resource, signal, sys, time
import jax, numpy as np, optax
from jaxgrad.models import get_model
from jaxgrad.training import CheckpointError, classifier_loss, create_train_state, fit, make_train_step

key = jax.random.key(0)
model = get_model("mlp", hidden=(512,))
rng = np.random.default_rng(0)
data = {"image": rng.random((48, 4, 4, 1), np.float32),
        "label": rng.integers(0, 10, 48).astype(np.int32)}
tx = optax.sgd(0.05, momentum=0.9)
step = make_train_step(classifier_loss(model), tx)
state = create_train_state(model, tx, key, data["image"][:1])
kw = dict(key=key, batch_size=8, progress=False, checkpoint_dir=sys.argv[1], keep_checkpoints=2)
fit(state, step, data, num_steps=5, checkpoint_every=5, **kw)  # good checkpoints: 1 and 5
# Then a disk that takes no file above 20 kB (no root, no mount needed): step 100's array
# files fail in orbax's background thread, as on a full disk.
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (20000, resource.RLIM_INFINITY))
seen = []
try:
    fit(state, step, data, num_steps=400, checkpoint_every=100,
        on_step=lambda s, _: (seen.append(s), time.sleep(0.02)), **kw)
except CheckpointError as e:
    print(f"CheckpointError after step {seen[-1]}: {e}", flush=True)
    sys.exit(3)
"""


def test_a_failing_asynchronous_save_surfaces_at_the_next_step_not_the_next_save(tmp_path):
    """A full disk (files capped by RLIMIT_FSIZE) fails step 100's background save: ``fit``
    raises CheckpointError naming that step and folder while training goes on, before the
    next due save (200) or the end (400); the process exits without hanging, and the good
    checkpoints before it are kept, verified by their hashes."""
    ckpt = tmp_path / "ckpt"
    proc = subprocess.run(
        [sys.executable, "-c", FULL_DISK, str(ckpt)],
        cwd=REPO,
        env={**os.environ, "XLA_FLAGS": ""},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 3, proc.stdout + proc.stderr[-3000:]
    line = proc.stdout.strip().splitlines()[-1]
    after = int(line.split("after step ")[1].split(":")[0])
    assert 100 <= after < 200, line  # surfaced by poll, before the next due save
    assert f"saving the checkpoint of step 100 into {str(ckpt)!r} failed" in line
    assert "rerun the same command to resume" in line
    c = Checkpointer(ckpt)
    assert c.latest_step() == 5 and c.all_steps() == [1, 5]  # nothing half-written counts
    assert (ckpt / "5.sha256.json").is_file() and c.verify(5) == []


def test_poll_agrees_across_processes_and_always_joins_the_exchange(monkeypatch, tmp_path):
    """With several processes, ``poll`` exchanges every process's outcome, even when its own
    check raised, and a failure on another process raises here too (faked exchange)."""
    import jax.numpy as jnp

    from jaxgrad.training import CheckpointError
    from jaxgrad.training import checkpoint as ck

    c = Checkpointer(tmp_path / "c", save_every=1)
    c.save(3, {"w": jnp.ones(4)})
    c.wait()
    exchanged = []

    def allgather(local, others):
        def fake(x):
            exchanged.append(np.asarray(x).tolist())
            return np.asarray([np.asarray(x).tolist(), others])

        return fake

    monkeypatch.setattr(ck.jax, "process_count", lambda: 2)
    monkeypatch.setattr(ck, "_from_process_0", lambda text: text)
    # Nothing pending here, process 1 failed its part of step 4: raises here too.
    monkeypatch.setattr(ck.multihost_utils, "process_allgather", allgather(None, [1, 4]))
    with pytest.raises(CheckpointError, match="step 4 .* process 1 failed to write its part"):
        c.poll()
    assert exchanged == [[0, -1]]
    # Every process fine: no error, still one exchange.
    monkeypatch.setattr(ck.multihost_utils, "process_allgather", allgather(None, [0, -1]))
    c.poll()
    assert len(exchanged) == 2
    # Its own failed save raises, after the exchange (the other process learns of it).
    c._pending = 7
    monkeypatch.setattr(c._manager, "is_saving_in_progress", lambda: False)

    def failing():
        raise ValueError("RESOURCE_EXHAUSTED: no space left")

    monkeypatch.setattr(c._manager, "wait_until_finished", failing)
    with pytest.raises(CheckpointError, match="step 7 .* RESOURCE_EXHAUSTED"):
        c.poll()
    assert exchanged[-1] == [1, 7]
    monkeypatch.undo()
    c.close()  # the failure was raised once: closing does not raise it again


def test_a_lock_that_cannot_be_refreshed_fails_the_save_naming_step_and_folder(tmp_path):
    """A folder turned read-only under a run (faked: root ignores permissions) fails the
    save at once with CheckpointError, not a raw OSError, and closing releases the lock."""
    import jax.numpy as jnp

    from jaxgrad.training import CheckpointError

    c = Checkpointer(tmp_path / "c", save_every=1, lock=True)
    c.save(1, {"w": jnp.ones(4)})

    def read_only(force=False):
        raise PermissionError(13, "Read-only file system", str(tmp_path / "c" / "LOCK"))

    c._touch = read_only
    with pytest.raises(CheckpointError, match=r"step 2 into .* failed: PermissionError"):
        c.save(2, {"w": jnp.ones(4)})
    c.close()
    assert Checkpointer(tmp_path / "c").all_steps() == [1]
    assert not (tmp_path / "c" / "LOCK").exists()
