"""Notebook hygiene: the committed notebooks are numbered, stripped and parameterised."""

from __future__ import annotations

import re

import nbformat

from reg2rg_lib.env.doctor import KERNEL_NAME
from reg2rg_lib.nbtools import hygiene
from reg2rg_lib.nbtools.papermill_runner import discover


def test_notebooks_are_numbered_clean_and_parameterised(repo_root):
    nbs = discover(repo_root / "notebooks")
    assert nbs[0].name == "00_environment.ipynb"
    numbers = [p.name[:2] for p in nbs]
    assert numbers == sorted(set(numbers)), "notebook numbers must be unique"
    for p in nbs:
        assert hygiene.problems(p) == []
        nb = nbformat.read(p, as_version=4)
        params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
        for name in ("profile", "out_dir", "figures_dir"):
            assert re.search(rf"^{name}\s*=", params.source, re.M), f"{p.name}: parameters cell lacks {name}"


def test_hygiene_detects_outputs_and_strips_them(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": KERNEL_NAME,
        "display_name": "Python (reg2rg-kit)",
        "language": "python",
    }
    nb.cells = [nbformat.v4.new_markdown_cell("# intro"), nbformat.v4.new_code_cell("x = 1")]
    nb.cells[1].metadata["tags"] = ["parameters"]
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", text="1")]
    nb.cells[1].execution_count = 3
    path = tmp_path / "01_x.ipynb"
    nbformat.write(nb, path)
    assert any("committed outputs" in m for m in hygiene.problems(path))
    assert hygiene.main([str(tmp_path)]) == 1
    assert hygiene.main(["--strip", str(tmp_path)]) == 0
    assert hygiene.problems(path) == []


def _clean_notebook(path, kernelspec):
    nb = nbformat.v4.new_notebook()
    if kernelspec is not None:
        nb.metadata["kernelspec"] = kernelspec
    nb.cells = [nbformat.v4.new_markdown_cell("# intro"), nbformat.v4.new_code_cell("x = 1")]
    nb.cells[1].metadata["tags"] = ["parameters"]
    nbformat.write(nb, path)
    return path


def test_hygiene_requires_the_kits_kernel_name(tmp_path):
    good = _clean_notebook(
        tmp_path / "01_good.ipynb", {"name": KERNEL_NAME, "display_name": "x", "language": "python"}
    )
    other = _clean_notebook(
        tmp_path / "02_other.ipynb", {"name": "python3", "display_name": "x", "language": "python"}
    )
    missing = _clean_notebook(tmp_path / "03_missing.ipynb", None)
    assert hygiene.problems(good) == []
    assert any("kernelspec name 'python3'" in m for m in hygiene.problems(other))
    assert any("kernelspec name None" in m for m in hygiene.problems(missing))
    assert hygiene.main([str(tmp_path)]) == 1
