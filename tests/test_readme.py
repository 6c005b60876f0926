"""The README's code runs as printed and says what it claims."""

import re
from pathlib import Path

import jax.numpy as jnp
import numpy as np

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
