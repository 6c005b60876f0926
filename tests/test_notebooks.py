"""The notebooks run top to bottom (nbclient, a fresh kernel, SMOKE = True), show their figures,
and their rendered ``.ipynb`` (Colab's links) match their jupytext ``.py`` sources.

Executing them is slow (30-60 s each on 2 cores): ``.ci/run`` runs these with the slow tier.
"""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("notebooks_run", ROOT / "notebooks" / "run.py")
run = importlib.util.module_from_spec(spec)
spec.loader.exec_module(run)

# The figures each notebook must display (image/png outputs), at least.
FIGURES = {"quickstart": 3, "rethinking": 3, "sanity": 2}


def test_every_notebook_is_rendered_from_its_source():
    assert set(FIGURES) == set(run.NOTEBOOKS)
    for name in run.NOTEBOOKS:
        text = (ROOT / "notebooks" / f"{name}.ipynb").read_text()
        assert text == run.render(name), f"notebooks/{name}.ipynb is stale: run.py --render"
        assert '"outputs": []' in text and "image/png" not in text  # no outputs committed


def test_the_readme_links_every_notebook_to_colab():
    readme = (ROOT / "README.md").read_text()
    links = [w for w in readme.split("(") if w.startswith("https://colab.research.google.com/")]
    for name in run.NOTEBOOKS:
        assert any(f"/blob/main/notebooks/{name}.ipynb)" in link for link in links), name


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FIGURES))
def test_notebook_runs_top_to_bottom(name, tmp_path, capsys):
    nb, seconds = run.execute(name, smoke=True, out=tmp_path)
    with capsys.disabled():
        print(f"\n{name}: {seconds:.0f} s on this machine, {run.figures(nb)} figures")
    assert run.figures(nb) >= FIGURES[name]
    errors = [
        out
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if out.get("output_type") == "error"
    ]
    assert not errors
    assert (tmp_path / f"{name}.ipynb").is_file()


@pytest.mark.slow
def test_a_notebook_with_a_failing_cell_fails(tmp_path, monkeypatch):
    from nbclient.exceptions import CellExecutionError

    source = tmp_path / "broken.py"
    source.write_text(
        "# %% tags=['parameters']\nSMOKE = False\n\n# %%\nassert SMOKE\n\n# %%\n1 / 0\n"
    )
    monkeypatch.setattr(run, "HERE", tmp_path)
    with pytest.raises(CellExecutionError, match="ZeroDivisionError"):
        run.execute("broken", smoke=True)
    # Without the injected parameter its own assertion fails first: the cell is injected.
    with pytest.raises(CellExecutionError, match="AssertionError"):
        run.execute("broken", smoke=False)
