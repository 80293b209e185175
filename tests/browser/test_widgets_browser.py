"""The widgets in a real JupyterLab, in headless Chromium, with no network but loopback.

One JupyterLab run (module fixture) opens ``widgets.ipynb``, which trains a tiny model on
the default task and shows both widgets; the driver hovers, slides and selects, then
saves the notebook.  The second test exports the saved notebook with ``jupyter nbconvert
--to html`` and checks the static fallback in the exported page, offline.
Screenshots go to ``artifacts/browser/``.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from browser_harness import HERE, JupyterLab, run_node

pytestmark = pytest.mark.browser

NOTEBOOK = "widgets.ipynb"
SCRIPT_TOKEN = "<script>__xss=1</script>"
IMG_TOKEN = '"><img src=x onerror=__xss=2>'


@pytest.fixture(scope="module")
def lab_run(browser_tools, artifacts, tmp_path_factory):
    """Run the notebook in JupyterLab once; what the page showed, what the kernel expected."""
    root = tmp_path_factory.mktemp("lab-root")
    shutil.copy(HERE / NOTEBOOK, root / NOTEBOOK)
    lab = JupyterLab(root, tmp_path_factory.mktemp("lab-home"))
    try:
        shots = {name: str(artifacts / f"jupyterlab-{name}.png") for name in ("page", "attention", "hidden")}
        seen = run_node(HERE / "drive_lab.cjs", {
            "url": lab.url, "token": lab.token, "notebook": NOTEBOOK, "expected": str(root / "expected.json"),
            "screenshots": shots, "timeout_ms": 150_000,
        }, browser_tools, timeout=240)
    finally:
        lab.stop()
    assert lab.leftover == [], f"processes still running after JupyterLab stopped: {lab.leftover}"
    expected = json.loads((root / "expected.json").read_text())
    return {"seen": seen, "expected": expected, "root": root, "shots": shots}


def test_widgets_in_jupyterlab(lab_run):
    seen, expected = lab_run["seen"], lab_run["expected"]
    att = expected["attention"]
    assert seen["ok"] and seen["errors"] == []
    assert seen["blocked"] == []  # nothing but 127.0.0.1 was asked for
    # the heatmap: labelled by the tokens, one cell per weight
    assert seen["sourceLabels"] == att["source"]
    assert seen["targetLabels"] == att["target"]
    assert seen["cellCount"] == len(att["source"]) * len(att["target"])
    # hovering a cell highlights exactly its source and target tokens and shows the weight
    i, j = att["cell"]
    assert seen["cellHover"]["source"] == [att["source"][j]]
    assert seen["cellHover"]["target"] == [att["target"][i]]
    assert seen["cellHover"]["cells"] == 1
    assert f"weight {att['weight']:.3f}" in seen["cellHover"]["readout"]
    # hovering the <script> source token links the targets that attend to it
    column = seen["sourceHover"]["column"]
    assert seen["sourceHover"]["active"] == [SCRIPT_TOKEN]
    assert seen["sourceHover"]["linked"] == att["linked"][str(column)]
    # the step slider reveals the first two target tokens
    assert seen["step"] == {"future": len(att["target"]) - 2, "text": f"2 / {len(att['target'])}"}
    # the sentence selector switches to the second sentence and its best hypothesis
    assert seen["secondSentence"]["source"] == att["second_sentence"]["source"]
    assert seen["secondSentence"]["target"] == att["second_sentence"]["target"]
    assert len(seen["secondSentence"]["hypotheses"]) == 2
    # the payload tokens are text: shown verbatim, no element made from them, nothing ran
    assert SCRIPT_TOKEN in seen["sourceLabels"] and IMG_TOKEN in seen["sourceLabels"]
    assert seen["injection"] == {"xss": "undefined", "elements": 0}
    # hidden-state explorer: tokens, gate series, units most active at the hovered token
    hid = expected["hidden"]
    assert seen["hiddenTokens"] == hid["tokens"]
    assert seen["hiddenSeries"] == hid["series"] and "→ forget gate" in hid["series"]
    assert seen["hiddenTop"]["units"] == hid["most_active"][seen["hiddenTop"]["token"]]
    picked = seen["unitPicked"]
    assert picked["input"] == str(picked["unit"]) and picked["readout"].startswith(f"unit {picked['unit']} at")
    for shot in lab_run["shots"].values():
        assert open(shot, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_static_fallback_in_nbconvert_html_offline(lab_run, browser_tools, artifacts):
    notebook = lab_run["root"] / NOTEBOOK
    saved = json.loads(notebook.read_text())
    outputs = [o for cell in saved["cells"] for o in cell.get("outputs", []) if "data" in o]
    widget_outputs = [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o["data"]]
    assert len(widget_outputs) == 2 and all("text/html" in o["data"] for o in widget_outputs)
    subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "html", str(notebook)], check=True,
                   capture_output=True, timeout=120)
    page = notebook.with_suffix(".html")
    seen = run_node(HERE / "check_static.cjs", {"page": str(page), "screenshot": str(artifacts / "nbconvert.png")},
                    browser_tools, timeout=90)
    assert seen["svgs"] == 2  # attention and hidden states, drawn (non-zero size)
    assert all(w > 100 and h > 50 for w, h in seen["sizes"])
    assert SCRIPT_TOKEN in seen["texts"] and IMG_TOKEN in seen["texts"]
    assert set(lab_run["expected"]["attention"]["source"]) <= set(seen["texts"])
    assert seen["injection"] == {"xss": "undefined", "elements": 0}
