"""The papers' full-size variants, proven on this machine (``make test-slow``).

Each full-size config runs end to end on tensorflow-datasets mock data
(``tfds.testing.mock_data``: random images with the real data set's shapes and class
counts) on the 8 fake CPU devices, for a couple of steps of its full schedule, with its
networks narrowed (the widths, not the depth or the programs) so that CPU compilation stays
in seconds; then it runs again with more steps and must resume from its checkpoints. The
``--dry_run`` command compiles each variant's real programs at full size and batch.
"""

import json
import os
import subprocess
import sys

import jax
import pytest
import tensorflow_datasets as tfds

from jaxgrad.training import Checkpointer, read_metrics

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.slow


def _score_matching_config(variant):
    from experiments.configs.score_matching import get_config

    c = get_config(variant)
    assert c.model.name == "resnet18" and c.evaluation.gan_test.judge.model.name == "vgg11"
    c.model.widths = (4, 4, 8, 8)
    c.evaluation.gan_test.judge.model.layers = (4, "M", 4, "M", 8, "M", 8, "M", 8, "M")
    c.train.update(dict(batch_size=16, max_steps=2, log_every=1))
    e = c.evaluation
    e.trace.update(dict(num_images=4, chunk=4, draws=2, exact=False))  # 3,072 HVPs an image
    e.gan_test.update(dict(num_samples=16, steps=2))
    e.perturbation.update(dict(num_images=16, chunk=16))
    e.density_ratio.update(dict(num_images=8, chunk=8, num_samples=2))
    return c


@pytest.mark.parametrize("variant, classes", [("cifar100", 100), ("cifar10", 10)])
def test_score_matching_full_size_variant_runs_on_mock_data_and_resumes(tmp_path, variant, classes):
    from experiments.score_matching import run

    assert jax.device_count() == 8
    config = _score_matching_config(variant)
    assert config.num_devices == 0 and config.data.num_classes == classes  # every device
    models = ("judge", *config.train.objectives)
    with tfds.testing.mock_data(num_examples=32):
        out = run(config, tmp_path)
    res = out["results"]
    for objective in config.train.objectives:
        row = res[objective]
        pp = row["pixel_perturbation"]
        assert len(pp["fractions"]) == 25 and pp["fractions"][-1] == pytest.approx(1.0)
        assert {"least", "random", "baseline_model"} <= set(pp)  # 3a and 3b
        assert 0.0 <= row["gan_test_accuracy"] <= 1.0
    for name in ("report.md", "samples.png", "gradients.png", "curves.png", "results.json"):
        assert (tmp_path / name).is_file()
    report = (tmp_path / "report.md").read_text()
    assert "CIFAR ResNet-18" in report and f"({classes} classes)" in report
    assert "CIFAR VGG-11" in report and "SGD 0.1 (momentum 0.9)" in report
    for name in models:
        assert Checkpointer(tmp_path / "checkpoints" / name).latest_step() == 2
        rows = read_metrics(tmp_path / "metrics" / f"{name}.jsonl")
        train_rows = [r for r in rows if r["split"] == "train"]
        assert [r["step"] for r in train_rows] == [1, 2]
        assert all(r["examples_per_second_per_device"] > 0 for r in train_rows)
        assert any((tmp_path / "tensorboard" / name).iterdir())
    if variant != "cifar100":
        return
    # The same run with a longer budget resumes every model from its checkpoint.
    config.unlock()
    config.train.max_steps = 3
    with tfds.testing.mock_data(num_examples=32):
        run(config, tmp_path)
    for name in models:
        assert Checkpointer(tmp_path / "checkpoints" / name).latest_step() == 3
        rows = read_metrics(tmp_path / "metrics" / f"{name}.jsonl")
        assert [r["step"] for r in rows if r["split"] == "train"] == [1, 2, 3]  # 3 only added


def test_sanity_checks_mnist_variant_runs_on_mock_data_and_resumes(tmp_path):
    from experiments.configs.sanity_checks import get_config
    from experiments.sanity_checks import run

    config = get_config("mnist")
    assert (config.model.features, config.model.dense) == ((32, 64), 1024)  # the note's CNN
    config.num_devices = 0
    config.train.update(dict(max_steps=2, log_every=1))
    config.evaluation.sanity.update(dict(num_images=8, ig_steps=8, smoothgrad_samples=2))
    config.evaluation.sanity.control_draws = 4
    config.evaluation.perturbation.update(dict(num_images=16, ig_steps=4))
    with tfds.testing.mock_data(num_examples=64):
        out = run(config, tmp_path)
    assert len(out["stages"]) == 5  # the trained network, then its 4 layers randomized
    assert (tmp_path / "report.md").is_file() and (tmp_path / "maps.png").is_file()
    assert Checkpointer(tmp_path / "checkpoints").latest_step() == 2
    config.unlock()
    config.train.max_steps = 4
    with tfds.testing.mock_data(num_examples=64):
        run(config, tmp_path)
    assert Checkpointer(tmp_path / "checkpoints").latest_step() == 4
    steps = [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl") if r["split"] == "train"]
    assert steps == [1, 2, 3, 4]


@pytest.mark.parametrize(
    "name, variant, trained",
    [
        (
            "score_matching",
            "cifar100",
            ("none", "score_matching", "anti_score_matching", "gradient_norm"),
        ),
        (
            "score_matching",
            "cifar10",
            ("none", "score_matching", "anti_score_matching", "gradient_norm"),
        ),
        ("sanity_checks", "mnist", ("classifier",)),
        ("diff_roar", "cifar10", ("standard", "linf_8/255", "l2_0.25", "l2_0.5")),
        ("diff_roar", "svhn", ("standard", "linf_8/255", "l2_0.25", "l2_0.5")),
        ("diff_roar", "fashion_mnist", ("standard", "l2_1.0", "linf_0.1")),
        pytest.param(
            "jacobian_matching",
            "cifar100",
            (
                "teacher",
                "student, cross_entropy",
                "student, distillation",
                "student, jacobian_matching",
                "student, noisy_distillation",
            ),
            marks=pytest.mark.slow,
        ),
        pytest.param("fullgrad", "cifar100", ("model", "ROAR retraining"), marks=pytest.mark.slow),
    ],
)
def test_dry_run_compiles_the_full_size_programs_and_writes_their_costs(
    tmp_path, name, variant, trained
):
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    cmd = [
        sys.executable,
        "-m",
        f"experiments.{name}",
        f"--config=experiments/configs/{name}.py:{variant}",
        f"--workdir={tmp_path}",
        "--dry_run",
    ]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    d = json.loads((tmp_path / "dry_run.json").read_text())
    assert d["num_devices"] == 8 and d["platform"] == "cpu"
    programs = {p["name"]: p for p in d["programs"]}
    for model in trained:
        step = programs[f"train step: {model}"]
        assert step["devices"] == 8 and step["flops_exact"]
        assert step["flops_per_call"] > 0 and step["memory_per_device"]["peak_bytes"] > 0
        assert step["total_flops"] == step["flops_per_call"] * step["calls"]
    assert d["total_flops"] == pytest.approx(sum(p["total_flops"] for p in d["programs"]))
    if name == "diff_roar" and variant == "cifar10":
        # PGD's 7 ascent steps are counted whole (unrolled for the count): a robust step
        # costs about 1 + 7 x (forward + input-gradient) plain steps' worth.
        ratio = (
            programs["train step: l2_0.5"]["flops_per_call"]
            / programs["train step: standard"]["flops_per_call"]
        )
        assert 4 < ratio < 9
        retrain = programs["train step: DiffROAR retraining"]
        assert retrain["calls"] == 2 * 8 * (3 + 2 + 1 + 2 + 2) * 150 * 391
        masking = programs["DiffROAR masking (train split, 50000 images)"]
        assert masking["calls"] == 2 * 8 * (4 + 2)  # per mask of each model; per run: control
    assert d["experiment"] == f"{name}:{variant}"
    if name == "jacobian_matching":
        # 9 students (3 sizes x 3 repeats) per method, 10,000 steps each.
        assert programs["train step: student, cross_entropy"]["calls"] == 9 * 10_000
        # Jacobian matching differentiates two input-gradients: double backprop.
        ratio = (
            programs["train step: student, jacobian_matching"]["flops_per_call"]
            / programs["train step: student, distillation"]["flops_per_call"]
        )
        assert ratio > 1.5
    if name == "fullgrad":
        # (6 methods + random) x 5 fractions masks and the unmasked reference, 3 seeds each,
        # 60 epochs of 391 steps.
        assert programs["train step: ROAR retraining"]["calls"] == (7 * 5 + 1) * 3 * 60 * 391
        sg = programs["attribution smoothgrad (500 images)"]
        assert sg["flops_exact"] and sg["memory_per_device"]["peak_bytes"] < 16 * 2**30
    if name == "score_matching":
        # 200 epochs of 391 steps of batch 128 (50,000 images).
        assert programs["train step: none"]["calls"] == 200 * 391
        # Pixel perturbation on 10 chunks of 1,000 test images: least and random for the
        # four models, and 3b for the three measured after the baseline.
        perturbation = next(p for n, p in programs.items() if n.startswith("pixel perturbation"))
        assert perturbation["calls"] == (4 * 2 + 3) * 10 and perturbation["flops_exact"]
        # Double backprop: a regularized step costs several plain ones.
        ratio = (
            programs["train step: score_matching"]["flops_per_call"]
            / programs["train step: none"]["flops_per_call"]
        )
        assert 2 < ratio < 6
    hours = d["projection"]["accelerators"]
    assert set(hours) >= {
        "1x A100 (SXM)",
        "1x H100 (SXM)",
        "TPU v4-8 (4 chips)",
        "TPU v5e-8 (8 chips)",
    }
    assert "projection" in d["projection"]["assumptions"]
    assert not list(tmp_path.glob("checkpoints"))  # nothing was trained


@pytest.mark.parametrize(
    "variant, shape, models, attacks",
    [
        ("cifar10", (32, 32, 3), ("standard", "linf_8/255"), {"l2_0.25", "l2_0.5", "l2_1"}),
        ("svhn", (32, 32, 3), ("standard", "linf_8/255"), {"l2_0.25", "l2_0.5", "l2_1"}),
        ("fashion_mnist", (28, 28, 1), ("standard", "l2_1.0"), {"l2_1", "linf_0.1"}),
    ],
)
def test_diff_roar_full_size_variant_runs_on_mock_data_and_resumes(
    tmp_path, variant, shape, models, attacks
):
    from experiments.configs.diff_roar import get_config
    from experiments.diff_roar import run

    config = get_config(variant)
    if variant == "cifar10":
        assert config.model.name == "resnet50" and config.train.augment == "cifar"
        assert [m["runs"] for m in config.train.models] == [3, 2, 1, 2]  # the notebook's runs
    if config.model.name.startswith("resnet"):  # narrowed for the CPU
        config.model.update(dict(name="resnet18", widths=(4, 4, 8, 8)))
    config.train.update(dict(batch_size=16, max_steps=2, log_every=1))
    config.train.models = tuple(dict(m, runs=1) for m in config.train.models[:2])
    config.evaluation.update(dict(attack_images=16, attribution_chunk=16))
    d = config.evaluation.diff_roar
    d.update(dict(fractions=(0.5, 0.1), epochs=1, control_runs=1))
    with tfds.testing.mock_data(num_examples=32):
        out = run(config, tmp_path)
    assert set(out["diff_roar"]) == {*models, "random"}
    for r in out["diff_roar"].values():
        assert len(r["diff_roar"]) == 2 and all(-1 <= v <= 1 for v in r["diff_roar"])
    for m in out["models"].values():
        assert set(m["robust_accuracy"]) == attacks
    assert (tmp_path / "diff_roar.csv").is_file() and (tmp_path / "diff_roar.png").is_file()
    assert json.loads((tmp_path / "config.json").read_text())["data"]["source"].endswith(variant)
    safe = [m.replace("/", "_") for m in models]
    for name in safe:
        assert Checkpointer(tmp_path / "checkpoints" / name).latest_step() == 2
    # Every retraining is recorded; a rerun retrains none of them again.
    recorded = json.loads((tmp_path / "roar" / f"{safe[0]}.json").read_text())["accuracy"]
    assert len(recorded) == 2 * 2  # top-k and bottom-k kept, two fractions, one run
    if variant != "cifar10":
        return
    config.unlock()
    config.train.max_steps = 3
    with tfds.testing.mock_data(num_examples=32):
        run(config, tmp_path)
    for name in safe:
        assert Checkpointer(tmp_path / "checkpoints" / name).latest_step() == 3
        rows = read_metrics(tmp_path / "metrics" / f"{name}.jsonl")
        assert [r["step"] for r in rows if r["split"] == "train"] == [1, 2, 3]
