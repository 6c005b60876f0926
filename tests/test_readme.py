"""The README's code runs as printed and says what it claims."""

import re
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgrad.attribution import FullGradWarning

README = Path(__file__).resolve().parents[1] / "README.md"


def _block(heading: str) -> str:
    """The first ```python block after ``heading`` in the README."""
    text = README.read_text()
    section = text[text.index(heading) :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_own_code_example_runs_and_its_trace_estimates_agree():
    scope: dict = {}
    exec(_block("## Using it from your own JAX code"), scope)  # noqa: S102 - the README's code
    exact, hutchinson, taylor = (np.asarray(scope[k]) for k in ("exact", "hutchinson", "taylor"))
    assert scope["grads"].shape == (16, 8, 8, 1)
    assert exact.shape == (16,) and np.all(np.isfinite(exact)) and np.abs(exact).max() > 0
    scale = np.abs(exact).max()
    # Both stochastic estimates land near the exact trace on the smooth model (256 draws).
    assert np.abs(hutchinson - exact).max() < 0.25 * scale
    assert np.abs(taylor - exact).max() < 0.25 * scale
    assert float(jnp.corrcoef(jnp.asarray(exact), jnp.asarray(taylor))[0, 1]) > 0.9


def _blocks(heading: str, end: str) -> list[str]:
    """Every ```python block of the README between ``heading`` and ``end``."""
    text = README.read_text()
    section = text[text.index(heading) : text.index(end)]
    return re.findall(r"```python\n(.*?)```", section, re.S)


BYOM = _blocks("## Bring your own model", "## Training")
RECIPES = {"nnx": 1, "linen": 2, "linen_tapped": 3, "equinox": 4, "plain": 5}


def test_the_bring_your_own_model_section_has_the_five_recipes():
    assert len(BYOM) == 7  # set-up, five recipes, the shared explanation block
    assert "nnx_train_logit_fn" in BYOM[1] and "tap(self" in BYOM[3]
    assert "eqx.partition" in BYOM[4] and "def cnn(p, x, tap=identity_tap)" in BYOM[5]


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_each_recipe_runs_as_printed_and_its_explanations_hold(recipe):
    scope: dict = {}
    code = BYOM[0] + BYOM[RECIPES[recipe]] + BYOM[6]
    with jax.numpy_rank_promotion("allow"), warnings.catch_warnings():
        warnings.simplefilter("error", FullGradWarning)  # FullGrad is complete on all five
        exec(code, scope)  # noqa: S102 - the README's code, as printed
    lf, params, x, y = (scope[k] for k in ("logit_fn", "params", "x", "y"))
    assert scope["accuracy"] > 0.6  # 150 steps of Adam on digits, an 8-image check below
    with jax.numpy_rank_promotion("allow"):
        logits = lf(params, x)
        f0 = lf(params, jnp.zeros_like(x))
    # Integrated Gradients is complete: its sum is f_y(x) - f_y(0).
    gap = (logits - f0)[jnp.arange(8), y]
    np.testing.assert_allclose(scope["ig"].sum(axis=(1, 2, 3)), gap, rtol=0.05, atol=0.05)
    for name in ("ig", "sg", "cam", "fg"):
        assert scope[name].shape == x.shape and np.all(np.isfinite(scope[name]))
    assert np.all(np.asarray(scope["cam"]) >= 0) and np.all(np.asarray(scope["fg"]) >= 0)
    np.testing.assert_allclose(scope["trace"], 0.0, atol=1e-4)  # ReLU: piecewise linear
    assert scope["curve"]["probability"].shape == (3, 8)
    stages = scope["stages"]
    assert [s[0] for s in stages] == ["original", *scope["layers"]]
    spearman = {
        (r["method"], r["stage"]): r["mean"] for r in scope["rows"] if r["metric"] == "spearman_abs"
    }
    print(recipe, {k: round(v, 3) for k, v in spearman.items()})
    assert spearman["gradient", "original"] == pytest.approx(1.0)
    assert spearman["ig", "original"] == pytest.approx(1.0)
    # Every layer randomized: the gradient changes (IG keeps the input's imprint, the
    # known weakness of input-multiplied maps in this test).
    # As the README says: the gradient falls to about 0.1, IG stays near 0.9.
    assert spearman["gradient", scope["layers"][-1]] < 0.3
    assert spearman["ig", scope["layers"][-1]] > 0.8
