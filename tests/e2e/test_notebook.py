"""The demo notebook (examples/demo.ipynb), executed headless as a user would run it: it
trains on the local mesh, shows the curve and the TensorBoard scalars, renders a video and
downloads the model. Committed without outputs."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
NOTEBOOK = Path(__file__).resolve().parents[2] / "examples" / "demo.ipynb"


def test_the_notebook_is_committed_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code)


def test_the_demo_notebook_trains_renders_and_downloads(tmp_path, monkeypatch):
    monkeypatch.setenv("RLRINGS_DEMO_SECONDS", "40")  # a short budget: the notebook runs, whatever it learns
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    text = "".join(output.get("text", "") for output in outputs)
    assert "progress: " in text, text
    assert "'reason': 'time limit reached'" in text or "'solved': True" in text, text
    assert sum("image/png" in output.get("data", {}) for output in outputs) >= 2, "the curve and the scalars"
    assert any("<video" in output.get("data", {}).get("text/html", "") for output in outputs), "the video, inline"
    assert "greedy mean " in text and "over 10 episodes of CartPole-v1" in text, text
    run = tmp_path / "runs" / "demo"
    assert (run / "agent.mp4").stat().st_size > 10_000 and (run / "model.pt").exists()
