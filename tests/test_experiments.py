"""End-to-end runs of the experiment mains.

The full CPU-size configs where they take a minute, and every main's ``:smoke`` config (as
the flax examples' one-epoch tests): the files it writes and the properties its results must
have whatever the keys (ranges, shapes, identities), not stored numbers.
"""

import csv
import json
import math

import numpy as np
import pytest

from jaxgrad.training import Checkpointer, read_metrics


@pytest.mark.slow  # 2 minutes; its :smoke sibling checks the same flow
def test_shift_manipulation_changes_gradients_not_the_classifier(tmp_path):
    from experiments.configs.shift_manipulation import get_config
    from experiments.shift_manipulation import run

    config = get_config()
    config.num_devices = 1  # as `make demo`; 8 fake devices on 2 cores can stall XLA's collectives
    r = run(config, tmp_path)
    print(json.dumps(r, indent=2))
    closed, learned, shift = r["closed_form"], r["learned"], r["learned_shift"]
    assert closed["softmax_max_abs_diff"] <= 1e-6
    assert closed["gradient_max_abs_error"] <= 1e-5
    assert closed["same_predictions"]
    # The learned shift: the classifier frozen, so the softmax is the same to float precision
    # while the label's gradient turns to the map on held-out images.
    assert shift["softmax_max_abs_diff"] <= 1e-6 and shift["same_predictions"]
    assert shift["accuracy_shifted"] == pytest.approx(closed["accuracy_original"])
    assert shift["cosine_to_map_after"] >= 0.9
    assert abs(learned["accuracy_change_points"]) <= 1.0
    assert learned["cosine_to_map_before"] < 0.2
    assert learned["cosine_to_map_after"] >= 0.9
    report = (tmp_path / "report.md").read_text()
    assert f"{learned['cosine_to_map_after']:.3f}" in report
    assert (tmp_path / "manipulation.png").stat().st_size > 10_000


def _smoke(name, tmp_path):
    """The ``:smoke`` config of experiment ``name`` on one device, and its results."""
    import importlib

    config = importlib.import_module(f"experiments.configs.{name}").get_config("smoke")
    config.num_devices = 1  # 8 fake devices on 2 cores can stall XLA's collectives
    results = importlib.import_module(f"experiments.{name}").run(config, tmp_path)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved.keys() == results.keys()
    assert json.loads((tmp_path / "config.json").read_text())["seed"] == config.seed
    return config, results


def _files(tmp_path, *names):
    for name in names:
        path = tmp_path / name
        assert path.is_file(), f"{name} was not written"
        if name.endswith(".png"):
            assert path.stat().st_size > 10_000, f"{name} is nearly empty"
            assert f"({name})" in (tmp_path / "report.md").read_text(), f"report.md lacks {name}"


def _accuracy(value, *, above=0.1):
    """An accuracy in [0, 1] above ``above`` (chance for ten classes by default)."""
    return above < value <= 1.0


DEMO_FIGURES = (
    "input_gradients.png",
    "shift.png",
    "score_matching.png",
    "score_matching_gradients.png",
    "sanity.png",
    "sanity_maps.png",
    "methods.png",
    "perturbation.png",
)


@pytest.mark.slow  # a minute; the verdicts' logic is tested fast, below
def test_demo_smoke(tmp_path):
    config, r = _smoke("demo", tmp_path)
    _files(tmp_path, "report.md", "results.json", "metrics.jsonl", *DEMO_FIGURES)
    assert _accuracy(r["test_accuracy"], above=0.3)
    assert math.isfinite(r["test_loss"]) and r["test_loss"] > 0
    assert r["num_test"] == 360 and r["devices"] == 1 and r["batch_size"] == 64
    assert r["steps"] == config.train.epochs * math.ceil(1437 / 64)
    assert f"{r['test_accuracy']:.4f}" in (tmp_path / "report.md").read_text()
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert rows[-1]["split"] == "eval" and rows[-1]["accuracy"] == pytest.approx(r["test_accuracy"])
    assert Checkpointer(tmp_path / "checkpoints").latest_step() == r["steps"]
    # 1. The closed-form shift is exact whatever the training: same softmax, the class's
    # gradient is the map.
    shift = r["shift"]
    assert shift["same_predictions"] and shift["softmax_max_abs_diff"] <= 1e-6
    assert shift["cosine_to_map_after"] == pytest.approx(1.0, abs=1e-5)
    assert shift["gradient_max_abs_error"] <= 1e-5
    # 2. The pair shares its initialisation and batches; densities are positive, 1 at sigma 0.
    sm = r["score_matching"]
    for objective in ("none", config.score_matching.objective):
        ratios = sm[objective]["density_ratio"]
        assert len(ratios) == len(config.score_matching.density_ratio.sigmas)
        assert all(v > 0 for v in ratios) and ratios[0] == pytest.approx(1.0, abs=0.05)
        assert math.isfinite(sm[objective]["hessian_trace_mean"])
        assert Checkpointer(tmp_path / "score_matching" / objective / "checkpoints").latest_step()
    # 3. The reference stage correlates perfectly with itself, for every metric and method.
    sanity = r["sanity"]
    assert sanity["stages"][0] == "original" and len(sanity["stages"]) == 5
    for row in sanity["table"]:
        if row["stage"] == "original" and row["metric"] != "attribution_sum":
            assert row["mean"] == pytest.approx(1.0)
    # 4. Every method's curve starts at the unperturbed accuracy of the same images.
    m = r["methods"]
    starts = {m[name]["accuracy"][0] for name in (*config.evaluation.methods, "random")}
    assert len(starts) == 1 and 0 <= starts.pop() <= 1
    assert all(0 <= m[name]["auc"] <= 1 for name in config.evaluation.methods)


def test_the_demo_verdicts_follow_the_numbers():
    """Each part's sentence flips when its numbers do (made-up results, nothing trained)."""
    from experiments.reports import demo

    shift = dict(
        same_predictions=True,
        softmax_max_abs_diff=1e-7,
        cosine_to_map_after=1.0,
        gradient_max_abs_error=0.0,
    )
    assert demo.shift_verdict(shift).startswith("Reproduced")
    assert "gradient is not the pattern" in demo.shift_verdict(
        {**shift, "cosine_to_map_after": 0.5}
    )
    assert "probabilities or predictions moved" in demo.shift_verdict(
        {**shift, "same_predictions": False}
    )
    both = demo.shift_verdict({**shift, "same_predictions": False, "gradient_max_abs_error": 1.0})
    assert "moved and the gradient is not the pattern" in both

    def sm(objective, reg, base):
        return {
            "objective": objective,
            "sigmas": [0.1, 0.5],
            "none": {"density_ratio": [1.0, base]},
            objective: {"density_ratio": [1.0, reg]},
        }

    assert demo.score_matching_verdict(sm("score_matching", 0.4, 150.0)).startswith("As in")
    assert "did not show" in demo.score_matching_verdict(sm("score_matching", 2.0, 150.0))
    assert "did not show" in demo.score_matching_verdict(sm("score_matching", 0.4, 0.9))
    # Another objective has no prediction in the tour: numbers only, never "As in the paper".
    other = demo.score_matching_verdict(sm("anti_score_matching", 0.4, 150.0))
    assert "As in" not in other and "did not" not in other and "0.4" in other

    def by(signed, absolute, nz):
        values = {"spearman": signed, "spearman_abs": absolute, "spearman_nz": nz}
        return {("last", "integrated_gradients", k): {"mean": v} for k, v in values.items()}

    ok = demo.sanity_verdict(by(0.05, 0.9, 0.4), "last", ["integrated_gradients"])
    assert "the note's picture" in ok and "not the note's" not in ok
    for numbers in ((0.5, 0.9, 0.6), (0.05, 0.5, 0.3), (0.05, 0.9, 0.95)):
        assert "not the note's picture" in demo.sanity_verdict(
            by(*numbers), "last", ["integrated_gradients"]
        )

    curve = {"fractions": [0, 0.1, 0.5], "random": {"accuracy": [1, 0.9, 0.7], "auc": 0.4}}
    curve["gradient"] = {"accuracy": [1, 0.5, 0.2], "auc": 0.2}  # below at every fraction
    curve["gradcam"] = {"accuracy": [1, 0.95, 0.8], "auc": 0.45}  # worse than random
    curve["integrated_gradients"] = {"accuracy": [1, 0.5, 0.8], "auc": 0.3}  # rises again
    text = demo.perturbation_verdict(curve, ["gradient", "gradcam", "integrated_gradients"])
    assert "Lowest area: gradient." in text
    assert "by area: gradient, Integrated Gradients;" in text
    assert "at every fraction: gradient." in text
    assert "No better than the random order: Grad-CAM." in text
    assert "rises again as more pixels are replaced for Integrated Gradients:" in text


@pytest.mark.slow
def test_shift_manipulation_smoke(tmp_path):
    config, r = _smoke("shift_manipulation", tmp_path)
    _files(tmp_path, "report.md", "manipulation.png", "finetune_metrics.jsonl")
    closed, learned, shift = r["closed_form"], r["learned"], r["learned_shift"]
    assert shift["softmax_max_abs_diff"] <= 1e-6 and shift["same_predictions"]
    assert shift["cosine_to_map_after"] > learned["cosine_to_map_before"]
    # (a) is exact whatever the model: same softmax, the class's gradient is the map.
    assert closed["softmax_max_abs_diff"] <= 1e-6
    assert closed["gradient_max_abs_error"] <= 1e-5
    assert closed["same_predictions"]
    assert closed["accuracy_shifted"] == pytest.approx(closed["accuracy_original"])
    # (b) one epoch of fine-tuning already turns the gradients toward the map.
    assert learned["steps"] == config.manipulation.finetune.epochs * math.ceil(1437 / 64)
    assert _accuracy(learned["accuracy_original"]) and _accuracy(learned["accuracy_finetuned"])
    assert -1 <= learned["cosine_to_map_before"] < learned["cosine_to_map_after"] <= 1
    assert r["test_images"] == 360
    assert len(read_metrics(tmp_path / "finetune_metrics.jsonl")) >= 1


@pytest.mark.slow
def test_sanity_checks_smoke(tmp_path):
    config, r = _smoke("sanity_checks", tmp_path)
    _files(tmp_path, "report.md", "curves.png", "maps.png", "table.json", "table.csv")
    _files(tmp_path, "control.json")
    assert _accuracy(r["test_accuracy"], above=0.3)
    stages = r["stages"]
    assert stages[0] == "original" and len(stages) == 5  # and the CNN's four layers
    methods = {"integrated_gradients", "gradient_x_input", "gradient", "smoothgrad"}
    metrics = {"spearman", "spearman_abs", "spearman_nz", "attribution_sum"}
    table = {(row["stage"], row["method"], row["metric"]): row for row in r["table"]}
    assert len(r["table"]) == len(table) == len(stages) * len(methods) * len(metrics)
    for (stage, method, metric), row in table.items():
        assert all(math.isfinite(row[k]) for k in ("mean", "ci99_low", "ci99_high"))
        assert row["ci99_low"] <= row["mean"] <= row["ci99_high"]
        if metric != "attribution_sum":
            assert -1 - 1e-6 <= row["mean"] <= 1 + 1e-6
        if stage == "original" and metric != "attribution_sum":
            assert row["mean"] == pytest.approx(1.0), (method, metric)  # the model vs itself
    ig_sum = [table[(s, "integrated_gradients", "attribution_sum")]["mean"] for s in stages]
    assert abs(ig_sum[-1]) < 0.1 * abs(ig_sum[0])  # randomized weights, logit change near 0
    with open(tmp_path / "table.csv") as f:
        assert len(list(csv.DictReader(f))) == len(r["table"])
    s = config.evaluation.sanity
    for v in r["control"].values():
        assert v["pairs"] == s.num_images * s.control_draws
        assert 0 < v["mean"] < 1
    p = r["perturbation"]
    assert p["fractions"] == list(config.evaluation.perturbation.fractions)
    assert p["num_images"] == config.evaluation.perturbation.num_images
    for order in ("most", "least", "random"):
        acc = p[order]["accuracy"]
        assert len(acc) == len(p["fractions"]) and all(0 <= a <= 1 for a in acc)
        assert acc[0] == p["most"]["accuracy"][0]  # nothing removed: the same images
    assert p["most"]["auc"] < p["random"]["auc"] < p["least"]["auc"]


@pytest.mark.slow
def test_score_matching_smoke(tmp_path):
    config, r = _smoke("score_matching", tmp_path)
    _files(tmp_path, "report.md", "samples.png", "gradients.png", "curves.png")
    res = r["results"]
    assert _accuracy(res["judge_test_accuracy"])
    # Three epochs on digits: only the plain cross-entropy model is sure to beat chance.
    assert _accuracy(res["none"]["test_accuracy"])
    e = config.evaluation
    for objective in config.train.objectives:
        row = res[objective]
        assert 0 <= row["test_accuracy"] <= 1
        tr = row["hessian_trace"]
        assert math.isfinite(tr["exact"]["mean"])
        for name in ("hutchinson", "taylor", "taylor_one_sided"):
            assert math.isfinite(tr[name]["mean"]) and tr[name]["se"] > 0
        for name in ("hutchinson", "taylor"):
            # The smooth (avg-pooled softplus) network: both estimators agree with the exact
            # trace within 3 standard errors, and those are small enough to mean something.
            assert abs(tr[name]["z"]) <= 3, (objective, name, tr[name])
            assert tr[name]["se"] <= 0.25 * abs(tr["exact"]["mean"]), (objective, name, tr)
        assert 0 <= row["gan_test_accuracy"] <= 1 and 0 <= row["self_accuracy_on_samples"] <= 1
        # GAN-test: num_samples samples judged one by one, so a multiple of 1 / num_samples.
        assert row["gan_test_accuracy"] * e.gan_test.num_samples == pytest.approx(
            round(row["gan_test_accuracy"] * e.gan_test.num_samples), abs=1e-4
        )
        pp = row["pixel_perturbation"]
        assert pp["fractions"] == list(e.perturbation.fractions)
        for order in ("least", "random"):
            assert len(pp[order]["accuracy"]) == len(pp["fractions"])
            assert all(0 <= a <= 1 for a in pp[order]["accuracy"])
            assert 0 <= pp[order]["auc"] <= 1
        assert pp["least"]["accuracy"][0] == pp["random"]["accuracy"][0]  # nothing removed
        dr = row["density_ratio"]
        assert dr["sigmas"] == list(e.density_ratio.sigmas)
        assert all(math.isfinite(v) and v > 0 for v in dr["mean"] + dr["median"])
        assert all(0 <= v <= 1 for v in dr["fraction_above_1"])
    report = (tmp_path / "report.md").read_text()
    assert "78.01 / 59.47" in report  # the paper's numbers beside the measured ones
    for table in report.split("\n\n"):  # every Markdown table: one cell per header column
        lines = [ln for ln in table.splitlines() if ln.startswith("|") and not ln.startswith("|-")]
        assert len({line.count(" | ") for line in lines}) <= 1, table
    assert f"{res['none']['test_accuracy']:.4f}" in report


@pytest.mark.slow
def test_block_mnist_smoke(tmp_path):
    config, r = _smoke("block_mnist", tmp_path)
    _files(tmp_path, "report.md", "gradients.png", "diff_roar.png", "diff_roar.csv")
    assert set(r["results"]) == {
        f"{variant}/{arch}/{kind}"
        for variant in ("BlockMNIST", "BlockMNIST-Top")
        for arch in config.model
        for kind in ("standard", "pgd")
    }
    for name, row in r["results"].items():
        assert 0 <= row["pgd_accuracy"] <= 1 and 0 <= row["clean_accuracy"] <= 1
        for metric in ("signal_mass_abs", "signal_mass_pos", "top_k_in_null"):
            stats = row[metric]
            assert 0 <= stats["ci99_low"] <= stats["mean"] <= stats["ci99_high"] <= 1, name
    for variant in ("BlockMNIST", "BlockMNIST-Top"):  # the MLP learns in three epochs
        assert _accuracy(r["results"][f"{variant}/mlp/standard"]["clean_accuracy"], above=0.3)
    assert r["models"]["cnn"]["epochs"] == config.train.per_model.cnn.epochs
    assert r["models"]["mlp"]["epochs"] == config.train.epochs
    c = config.evaluation.diff_roar
    assert set(r["diff_roar"]) == {
        "BlockMNIST/standard gradient",
        "BlockMNIST/robust gradient",
        "BlockMNIST/random",
        "MNIST/random",
    }
    for name, curve in r["diff_roar"].items():
        seeds = c.control_seeds if name.endswith("random") else c.seeds
        np.testing.assert_allclose(curve["fractions"], c.fractions)
        top, bottom = (
            np.array(curve["top_k_accuracy_per_seed"]),
            curve["bottom_k_accuracy_per_seed"],
        )
        assert top.shape == np.shape(bottom) == (seeds, len(c.fractions))
        assert ((0 <= top) & (top <= 1)).all()
        np.testing.assert_allclose(
            curve["diff_roar"],
            np.mean(top, 0) - np.mean(bottom, 0),
            atol=1e-12,
        )
    with open(tmp_path / "diff_roar.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(r["diff_roar"]) * len(c.fractions)


@pytest.mark.slow
def test_jacobian_matching_smoke(tmp_path):
    config, r = _smoke("jacobian_matching", tmp_path)
    _files(tmp_path, "report.md", "accuracy.png", "table.csv", "config.json")
    d = config.distill
    assert _accuracy(r["teacher_accuracy"], above=0.3)
    assert len(r["runs"]) == len(d.sizes) * d.seeds * len(d.methods)
    assert all(
        0 <= run["accuracy"] <= 1 and 0 <= run["jacobian_distance"] <= 4 for run in r["runs"]
    )
    summary = {(row["size"], row["method"]): row for row in r["summary"]}
    for size in d.sizes:
        # The penalty is trained on: Jacobian-matched students' gradients sit closer to the
        # teacher's than cross-entropy students' (same subsets, paired by repeat).
        assert (
            summary[size, "jacobian_matching"]["jacobian_distance"]
            < summary[size, "cross_entropy"]["jacobian_distance"]
        )
        assert summary[size, "cross_entropy"]["gain_over_ce"] == 0.0
    assert f"{r['teacher_accuracy']:.4f}" in (tmp_path / "report.md").read_text()


@pytest.mark.slow
def test_synthetic_smoke(tmp_path):
    config, r = _smoke("synthetic", tmp_path)
    _files(tmp_path, "report.md", "results.json")
    for kind in ("standard", "robust"):
        row = r["models"][kind]
        assert 0 <= row["argmin_is_signal"] <= 1 and 0 <= row["argmax_is_signal"] <= 1
        assert 0 <= row["abs_cos"] <= 1 + 1e-6
        assert row["diff_roar"] == pytest.approx(
            row["top_1_kept_accuracy"] - row["bottom_1_kept_accuracy"]
        )
        assert row["aq"] == pytest.approx(row["argmax_is_signal"] - row["argmin_is_signal"])
    # The standard MLP separates the data whatever its width (any coordinate carries y).
    assert r["models"]["standard"]["test_accuracy"] > 0.9


def test_synthetic_data_has_one_signal_coordinate_carrying_the_label():
    from jaxgrad.data import make_signal_coordinate

    d = make_signal_coordinate(20_000, seed=3)
    x = d["image"].reshape(len(d["label"]), -1)
    assert np.all(np.count_nonzero(x, axis=1) == 1)
    np.testing.assert_array_equal(np.argmax(np.abs(x), 1), d["signal"])
    np.testing.assert_array_equal(x[np.arange(len(x)), d["signal"]], 2 * d["label"] - 1)
    assert abs(np.mean(d["signal"] == 0) - 0.1) < 0.01  # bias_prob
    counts = np.bincount(d["signal"], minlength=10)[1:] / len(x)
    np.testing.assert_allclose(counts, 0.1, atol=0.01)  # 0.9 / 9 each
    assert abs(np.mean(d["label"]) - 0.5) < 0.01


@pytest.mark.slow
def test_fullgrad_smoke(tmp_path):
    from experiments.reports.fullgrad import verdicts
    from jaxgrad.data import load_dataset

    config, r = _smoke("fullgrad", tmp_path)
    _files(
        tmp_path,
        "report.md",
        "results.json",
        "perturbation.csv",
        "roar.csv",
        "perturbation.png",
        "roar.png",
        "maps.png",
    )
    p, e = r["perturbation"], config.evaluation
    methods = [*e.methods, "random"]
    assert set(p["fills"]) == {"0", "0.5"}
    for rows in p["fills"].values():
        assert list(rows) == methods
        for row in rows.values():
            assert all(c >= 0 for c in row["fractional_change"])
            assert all(0 <= s <= 1 for s in row["unchanged_share"] + row["prediction_kept"])
    # Gradient x input and IG from a black baseline are exactly 0 on black pixels: where an
    # image has at least round(k * P) black pixels, they go first, and a black fill changes
    # nothing there (the property the report's black-fill caveat rests on).
    x = load_dataset("digits", "test")["image"][: p["num_images"]]
    black = (x[..., 0] == 0).reshape(len(x), -1).sum(1)
    for i, k in enumerate(p["fractions"]):
        removed = round(k * x.shape[1] * x.shape[2])
        expected = np.mean(black >= removed)
        for name in ("gradient_x_input", "integrated_gradients"):
            assert p["fills"]["0"][name]["unchanged_share"][i] >= expected - 1e-9
    # The random order removes content from some image at the largest k with a grey fill.
    assert p["fills"]["0.5"]["random"]["fractional_change"][-1] > 0
    roar = r["roar"]
    assert list(roar["curves"]) == methods
    for c in roar["curves"].values():
        acc = np.asarray(c["accuracy_per_seed"])
        assert acc.shape == (e.roar.seeds, len(e.roar.fractions))
        assert np.all((acc >= 0) & (acc <= 1))
        np.testing.assert_allclose(c["accuracy"], acc.mean(0))
    assert len(roar["reference_accuracy"]) == e.roar.seeds
    # The training set's mean fills the removed pixels.
    train = load_dataset("digits", "train")["image"]
    assert roar["fill_value"] == pytest.approx(float(train.mean()), rel=1e-5)
    v = verdicts(r)
    assert sorted(v["roar"]["ranked"]) == sorted(methods)
    text = (tmp_path / "report.md").read_text()
    assert f"{r['test_accuracy']:.4f}" in text and "Fill 0.5" in text


def test_fullgrad_verdicts_follow_the_numbers():
    from experiments.reports.fullgrad import verdicts

    def row(changes):
        return {"fractional_change": changes, "unchanged_share": [1.0] * len(changes)}

    results = {
        "perturbation": {
            "fills": {
                "0": {
                    "fullgrad": row([0.1, 0.2]),
                    "gradient_x_input": row([0.0, 1e-7]),
                    "random": row([0.3, 0.6]),
                },
                "0.5": {
                    "fullgrad": row([0.1, 0.2]),
                    "gradcam": row([0.2, 0.1]),
                    "random": row([0.3, 0.6]),
                },
            }
        },
        "roar": {
            "curves": {
                "fullgrad": {"accuracy": [0.5, 0.3]},
                "gradcam": {"accuracy": [0.6, 0.5]},
                "random": {"accuracy": [0.9, 0.3]},
            }
        },
    }
    v = verdicts(results)
    black, grey = v["perturbation"]["0"], v["perturbation"]["0.5"]
    assert black["ranked"] == ["gradient_x_input", "fullgrad", "random"]
    assert black["untouched"] == ["gradient_x_input"]  # within float noise at every k
    assert not black["fullgrad_lowest_at_every_k"]
    assert grey["untouched"] == [] and not grey["fullgrad_lowest_at_every_k"]
    assert grey["ranked"][:2] == ["fullgrad", "gradcam"]  # equal means keep their order
    assert v["roar"]["ranked"] == ["fullgrad", "gradcam", "random"]
    assert v["roar"]["fullgrad_in_best_two"]


def test_fullgrad_refuses_a_grad_cam_layer_that_is_not_a_tap_before_training():
    from experiments.configs.fullgrad import get_config
    from experiments.fullgrad import check_evaluation

    config = get_config("smoke")
    check_evaluation(config, np.zeros((1, 8, 8, 1), np.float32))
    config.evaluation.gradcam_layer = "conv9"
    with pytest.raises(ValueError, match="gradcam_layer 'conv9' is not a spatial tap.*act2"):
        check_evaluation(config, np.zeros((1, 8, 8, 1), np.float32))
    config.evaluation.gradcam_layer = "act2"
    config.evaluation.ties = "shuffle"
    with pytest.raises(ValueError, match="evaluation.ties"):
        check_evaluation(config, np.zeros((1, 8, 8, 1), np.float32))


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("epochs", 0, "config.train.epochs must be an integer >= 1, got 0"),
        ("batch_size", 0, "config.train.batch_size must be an integer >= 1"),
        ("learning_rate", -1e-3, "config.train.learning_rate must be a finite number > 0"),
        ("learning_rate", float("nan"), "config.train.learning_rate must be a finite number"),
        ("epochs", True, "config.train.epochs must be an integer"),
    ],
)
def test_a_train_section_that_cannot_train_is_refused_naming_the_key(field, value, message):
    from experiments.common import check_train_section
    from experiments.configs import base

    section = base.train()
    check_train_section(section)
    section[field] = value
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        check_train_section(section)


def test_num_classes_below_the_labels_is_refused_with_the_value_to_use():
    import ml_collections

    from experiments.common import load_splits

    data = ml_collections.ConfigDict(dict(source="digits", num_classes=3))
    with pytest.raises(ValueError, match=r"num_classes is 3, but the train labels .* set it to 10"):
        load_splits(data)


@pytest.mark.parametrize(
    "override, message",
    [
        (
            "--config.train.num_step=5",
            "--config.train.num_step: config.train has no key 'num_step' (its keys: augment,",
        ),
        ("--config.trian.epochs=1", "config has no key 'trian' (its keys: data,"),
        ("--config.sanity.ig_step=3", "did you mean config.sanity.ig_steps?"),
        ("-config.train.num_step=5", "-config.train.num_step: config.train has no key"),
        ("--noconfig.train.foo", "--noconfig.train.foo: config.train has no key 'foo'"),
        ("--config.train.epochs.x=1", "config.train.epochs has no key 'x' (config.train.epochs"),
    ],
)
def test_an_unknown_config_key_is_named_with_its_section(override, message):
    from experiments.common import unknown_override

    for config in ([], ["--config=experiments/configs/demo.py:smoke"]):  # default and given
        assert message in unknown_override(["demo", *config, override], "demo")
    # Known keys, values with dots or "=", and another experiment's config given by -config.
    fine = ["--config.train.epochs=2", "--config.data.source=idx:/a.b/c=d"]
    assert unknown_override(["demo", *fine], "demo") is None
    assert (
        unknown_override(
            ["x", "-config=experiments/configs/fullgrad.py", "--config.evaluation.ties=stable"],
            "demo",
        )
        is None
    )


@pytest.mark.parametrize(
    "override, message",
    [
        ("--config.train.num_step=5", "FATAL Flags parsing error: --config.train.num_step:"),
        ("--workdirr=x", "FATAL Flags parsing error: Unknown command line flag 'workdirr'"),
        ("--config.train.epochs=abc", "FATAL Flags parsing error: flag --config.train.epochs"),
    ],
)
def test_a_bad_flag_fails_in_seconds_with_one_line(tmp_path, override, message):
    import os
    import subprocess
    import sys

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.demo", f"--workdir={tmp_path}", override],
        cwd=repo,
        env={**os.environ, "XLA_FLAGS": ""},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1 and message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not any(tmp_path.iterdir())


def test_an_experiment_on_an_unprepared_tfds_data_set_fails_in_seconds_with_the_fix(tmp_path):
    """The mains default to tfds:mnist: offline and unprepared, exit 2 with the command that
    prepares it (and the offline alternative), before any model is built."""
    import os
    import subprocess
    import sys
    import time

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    empty = tmp_path / "tfds"
    empty.mkdir()
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.sanity_checks", f"--workdir={tmp_path / 'run'}"],
        cwd=repo,
        env={**os.environ, "XLA_FLAGS": "", "TFDS_DATA_DIR": str(empty)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    seconds = time.perf_counter() - t0
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"tfds:mnist (split 'train') is not prepared in $TFDS_DATA_DIR ({empty})" in proc.stderr
    assert "download_and_prepare()" in proc.stderr and "--config.data.source=idx:DIR" in proc.stderr
    assert "Traceback" not in proc.stderr and seconds < 60
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_an_experiment_with_zero_epochs_fails_in_seconds_naming_the_key(tmp_path):
    import os
    import subprocess
    import sys
    import time

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cmd = [sys.executable, "-m", "experiments.demo", f"--workdir={tmp_path}"]
    t0 = time.perf_counter()
    proc = subprocess.run(
        [*cmd, "--config.train.epochs=0"],
        cwd=repo,
        env={**os.environ, "XLA_FLAGS": ""},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0 and "config.train.epochs must be an integer >= 1" in proc.stderr
    assert time.perf_counter() - t0 < 60
    assert not (tmp_path / "checkpoints").exists()
