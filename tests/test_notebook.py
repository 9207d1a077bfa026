"""The tutorial notebook runs from top to bottom (nbclient), its outputs stripped in git; its models learn."""
import json
import re
import tempfile
import time

import nbformat
import pytest

from conftest import REPO

NOTEBOOK = REPO / "notebooks" / "memory_wrap_tutorial.ipynb"


def test_the_committed_notebook_has_no_outputs():
    notebook = json.loads(NOTEBOOK.read_text())
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert code and all(cell["outputs"] == [] and cell["execution_count"] is None for cell in code)


@pytest.mark.slow
def test_the_tutorial_runs_and_its_models_learn():
    import nbclient

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    started = time.time()
    nbclient.NotebookClient(notebook, timeout=180, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    seconds = time.time() - started
    text = "\n".join(output.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                     for output in cell.outputs)
    assert float(re.search(r"test accuracy: ([0-9.]+)%", text).group(1)) >= 80, text
    assert float(re.search(r"Summary \| folder \| encoder_memory .*Mean Accuracy:([0-9.]+)", text).group(1)) >= 80
    assert re.search(r"which_digit\.png: digit_\d \([0-9.]+%\) \| top example: train/digit_\d/\d+\.png", text), text
    assert "Encoder:from " in text and "frozen | Images:96 px" in text, "the pretrained backbone, in-process"
    images = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
              if "image/png" in output.get("data", {})]
    assert len(images) == 3, "the memory samples, the heatmap and the explained image's figure"
    print(f"the notebook ran in {seconds:.0f} s")
    work = re.search(r"memory-wrap-tutorial-\w+", text)
    assert work is None or not list(__import__("pathlib").Path(tempfile.gettempdir()).glob(work.group(0))), "cleaned"
