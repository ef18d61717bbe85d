"""notebooks/compare_optimizers.ipynb runs top to bottom on a real sweep."""

import os

import nbformat
from conftest import ROOT
from nbclient import NotebookClient

NOTEBOOK = ROOT / "notebooks" / "compare_optimizers.ipynb"


def test_notebook_shows_the_comparison_of_a_sweep(fashion_sweep, monkeypatch):
    # Relative to the project folder, as typed there; the kernel runs in notebooks/.
    monkeypatch.setenv("OPTSTUDY_STUDY_DIR", os.path.relpath(fashion_sweep, ROOT))
    monkeypatch.setenv("OPTSTUDY_ROOT", str(ROOT))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        notebook, timeout=300, resources={"metadata": {"path": NOTEBOOK.parent}}
    )
    client.execute()  # raises CellExecutionError on the first failing cell
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    html = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
    assert "adam lr=0.001" in html and "sgd lr=0.01" in html and "2/2" in html
    text = "".join(o.get("text", "") for o in outputs)
    assert "fashion_mnist/lenet5: best test_acc is" in text
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 3
