"""End-to-end runs of the experiment mains (full CPU-size configs where they take a minute)."""

import json


def test_shift_manipulation_changes_gradients_not_the_classifier(tmp_path):
    from experiments.configs.shift_manipulation import get_config
    from experiments.shift_manipulation import run

    config = get_config()
    config.num_devices = 1  # as `make demo`; 8 fake devices on 2 cores can stall XLA's collectives
    r = run(config, tmp_path)
    print(json.dumps(r, indent=2))
    closed, learned = r["closed_form"], r["learned"]
    assert closed["softmax_max_abs_diff"] <= 1e-6
    assert closed["gradient_max_abs_error"] <= 1e-5
    assert closed["same_predictions"]
    assert abs(learned["accuracy_change_points"]) <= 1.0
    assert learned["cosine_to_map_before"] < 0.2
    assert learned["cosine_to_map_after"] >= 0.9
    report = (tmp_path / "report.md").read_text()
    assert f"{learned['cosine_to_map_after']:.3f}" in report
    assert (tmp_path / "manipulation.png").stat().st_size > 10_000
