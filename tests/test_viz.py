import numpy as np
import pytest

from jaxgrad.viz import absolute_map, attribution_grid, normalize_signed, overlay, signed_rgb


def test_signed_normalisation_keeps_sign_and_clips():
    a = np.zeros((4, 4, 3))
    a[0, 0] = [1.0, 1.0, 1.0]  # channel sum +3
    a[1, 1] = [-0.5, 0.0, 0.0]  # -0.5
    n = normalize_signed(a, clip_percentile=100)
    assert n[0, 0] == 1.0 and n[1, 1] == pytest.approx(-0.5 / 3)
    rgb = signed_rgb(a, clip_percentile=100)
    np.testing.assert_allclose(rgb[0, 0], [1.0, 0.0, 0.0])  # positive: red
    assert rgb[1, 1, 2] == 1.0 and rgb[1, 1, 0] < 1.0  # negative: blue
    np.testing.assert_allclose(rgb[2, 2], [1.0, 1.0, 1.0])  # zero: white
    assert absolute_map(a, 100)[1, 1] == pytest.approx(0.5 / 3)
    np.testing.assert_array_equal(normalize_signed(np.zeros((3, 3))), 0.0)


def test_grid_returns_a_figure_writes_a_png_and_leaves_matplotlib_alone(tmp_path):
    import matplotlib
    from matplotlib.figure import Figure

    backend = matplotlib.get_backend()
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(3, 8, 8, 1))
    fig = attribution_grid(
        images,
        [rng.normal(size=images.shape)] * 2,
        tmp_path / "g.png",
        row_titles=["a", "b"],
        column_titles=["x", "y", "z"],
        title="t",
    )
    assert isinstance(fig, Figure) and len(fig.axes) == 3 * 3
    assert (tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert matplotlib.get_backend() == backend  # no matplotlib.use behind the user's back
    # Without a path nothing is written; the figure is for a notebook to show, and IPython's
    # display finds its PNG (a pyplot-free Figure has none of its own).
    from IPython.core.formatters import PNGFormatter

    shown = attribution_grid(images, images)
    assert isinstance(shown, Figure)
    assert PNGFormatter()(shown)[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.png"]
    with pytest.raises(ValueError, match="shape"):
        attribution_grid(images, [np.zeros((3, 8, 8, 3))], tmp_path / "bad.png")


def test_overlay_colours_signs_and_leaves_unattributed_pixels_alone(tmp_path):
    image = np.full((4, 4, 1), 0.5)
    a = np.zeros((4, 4, 1))
    a[0, 0], a[1, 1] = 2.0, -2.0
    out = overlay(image, a, alpha=1.0, clip_percentile=100)
    np.testing.assert_allclose(out[0, 0], [1.0, 0.0, 0.0])  # full positive: red
    np.testing.assert_allclose(out[1, 1], [0.0, 0.0, 1.0])  # full negative: blue
    np.testing.assert_allclose(out[2, 2], [0.5, 0.5, 0.5])  # no attribution: the image
    half = overlay(image, a, alpha=0.5, clip_percentile=100)
    np.testing.assert_allclose(half[0, 0], [0.75, 0.25, 0.25])
    unsigned = overlay(image, a, alpha=1.0, signed=False, clip_percentile=100)
    np.testing.assert_allclose(unsigned[1, 1], [1.0, 0.55, 0.0])
    with pytest.raises(ValueError, match="alpha"):
        overlay(image, a, alpha=2.0)
    attribution_grid(
        np.stack([image] * 2), np.stack([a] * 2), tmp_path / "o.png", overlay_input=True
    )
    assert (tmp_path / "o.png").read_bytes()[:4] == b"\x89PNG"
