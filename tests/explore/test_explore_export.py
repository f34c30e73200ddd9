"""The executed explorer keeps its widget state, and its HTML export embeds it (renderer copied for offline
use).

One tiny notebook goes through the kit's own runner (papermill), so a change that stops widget state from
being saved fails here. Chromium is optional: its test skips when the browser is absent (`make screenshot` is
the full check in a real browser).
"""

from __future__ import annotations

import json
import re
import shutil

import nbformat
import pytest

from reg2rg_lib.errors import BadInputError
from reg2rg_lib.explore import export
from reg2rg_lib.nbtools.papermill_runner import run_notebooks

TINY = '''
import numpy as np
from reg2rg_lib.data.sources import ArraySource
from reg2rg_lib.explore.case_sources import Explorable
from reg2rg_lib.explore.widgets import Explorer
vol = np.full((16, 16, 6), -800.0, np.float32)
heart = np.zeros(vol.shape, bool); heart[4:9, 5:10, 1:4] = True
gt = "The region 0 is heart: Heart size is normal."
ex = Explorer(Explorable(ArraySource({"valid_1_a_1": (vol, {"heart": heart}, (1, 1, 2), gt)})), longest=64)
ex.select_region("heart")
ex.widget
'''


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    src = tmp_path_factory.mktemp("nbs")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# tiny explorer"),
                nbformat.v4.new_code_cell('profile = "smoke"\nout_dir = "."\nfigures_dir = "."'),
                nbformat.v4.new_code_cell(TINY)]
    nb.cells[1].metadata["tags"] = ["parameters"]
    nbformat.write(nb, src / "07_tiny.ipynb")
    out = tmp_path_factory.mktemp("out")
    (result,) = run_notebooks("smoke", out, figures_dir=out, notebook_dir=src, progress=False)
    return result.executed


def test_runner_saves_the_widget_state(executed):
    state = export.widget_state(executed)
    models = {m["model_name"] for m in state.values()}
    assert {"ImageModel", "HTMLModel", "ButtonModel", "IntSliderModel"} <= models
    image = next(m for m in state.values() if m["model_name"] == "ImageModel")
    assert image["buffers"] and image["buffers"][0]["path"] == ["value"]  # the PNG itself is stored
    cells = [m["state"]["value"] for m in state.values() if m["model_name"] == "HTMLModel"]
    assert any('data-region="heart" data-selected="true"' in v for v in cells)  # the view as it was left


def _fake_js(root):
    for package, (version, _digest, entry) in export.JS_PACKAGES.items():
        path = root / "js" / f"{export._folder(package)}-{version}" / entry
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("// stand-in")


def test_html_export_embeds_state_and_a_local_renderer(executed, tmp_path, monkeypatch):
    _fake_js(tmp_path / "assets")
    monkeypatch.setattr(export, "asset_dir", lambda: tmp_path / "assets")
    html = export.export_html(executed, tmp_path / "page" / "explorer.html").read_text()
    match = re.search(r'<script type="application/vnd.jupyter.widget-state\+json">(.*?)</script>', html, re.S)
    assert match and json.loads(match.group(1))["state"]
    assert "explorer_files/jupyter-widgets-html-manager-1.0.15/dist/embed-amd.js" in html
    assert "explorer_files/requirejs-2.3.8/require.js" in html and "unpkg.com" not in html
    assert (tmp_path / "page" / "explorer_files" / "requirejs-2.3.8" / "require.js").is_file()


def test_export_refuses_a_notebook_without_widget_state(tmp_path):
    nb = nbformat.v4.new_notebook()
    nbformat.write(nb, tmp_path / "plain.ipynb")
    with pytest.raises(BadInputError, match="no widget state"):
        export.export_html(tmp_path / "plain.ipynb", tmp_path / "x.html", offline=False)
    with pytest.raises(BadInputError, match="not found"):
        export.export_html(tmp_path / "missing.ipynb", tmp_path / "x.html", offline=False)


@pytest.mark.skipif(
    shutil.which("chromium") is None, reason="chromium not installed (only `make screenshot` needs it)"
)
def test_chromium_screenshot_is_trimmed_to_the_content(tmp_path):
    page = tmp_path / "p.html"
    page.write_text('<html><body style="margin:0"><div style="width:300px;height:200px;background:#d62728">'
                    "</div></body></html>")
    png = export.screenshot(page, tmp_path / "p.png", width=400, height=900, wait_ms=1000)
    from PIL import Image

    img = Image.open(png).convert("RGB")
    assert img.width == 400 and 200 <= img.height < 300  # the empty bottom was cut
    assert img.getpixel((10, 10)) == (214, 39, 40)
