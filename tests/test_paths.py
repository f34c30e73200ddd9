"""reg2rg_lib/paths.py: the run folder's file names are spelled there only (they are a contract: the
authors' released formats, notebooks and tests read them)."""

from __future__ import annotations

import ast
import inspect
from collections.abc import Iterator
from pathlib import Path

import nbformat

from reg2rg_lib import paths as P

REPO = Path(__file__).resolve().parent.parent
#: Templated names (`region_ce_name`, `region_reports_file`): an f-string part ending so spells one.
TEMPLATE_ENDINGS = ("_avg_results.csv", "_reports.csv")


def folder_file_names() -> set[str]:
    """The file names (with a suffix) of a metrics folder, a run folder and the authors' release folder, read
    from their properties and argument-free methods in paths.py."""
    names = set()
    for cls in (P.MetricsFolder, P.RunFolder, P.ReleaseFolder):
        folder = cls("/nowhere")
        for name, member in inspect.getmembers(cls):
            if name.startswith("_"):
                continue
            if isinstance(member, property):
                value = getattr(folder, name)
            elif inspect.isfunction(member) and all(
                p.default is not p.empty for p in list(inspect.signature(member).parameters.values())[1:]
            ):
                value = getattr(folder, name)()
            else:
                continue
            names |= {p.name for p in (value if isinstance(value, tuple) else (value,)) if p.suffix}
    return names


def spelled(source: str, names: set[str]) -> Iterator[tuple[int, str]]:
    """(line, text) of each string constant of `source` that is one of `names` or ends a templated name;
    docstrings (prose) are left out."""
    tree = ast.parse(source)
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            text = node.value.lstrip("/")
            if text in names or (" " not in text and text.endswith(TEMPLATE_ENDINGS)):
                yield node.lineno, node.value


def test_the_folder_names_are_read_from_paths_py():
    names = folder_file_names()
    assert {"predictions.csv", "summary.json", "ce_metrics.csv", "nlg_evaluation_results.csv",
            "region_metrics.json", "grounded_by_kind.csv", "bertscore.csv", "metrics_manual.csv"} <= names
    assert P.MetricsFolder("m").region_ce("macro").name == "all_regions_macro_avg_results.csv"
    assert P.region_reports_file(P.MetricsFolder("m").region_reports, "lung").as_posix() == (
        "m/region_reports/lung_reports.csv")
    assert P.RunFolder("r").metrics_summary() == P.MetricsFolder("r/metrics").summary


def test_run_folder_file_names_are_spelled_only_in_paths_py():
    names = folder_file_names()
    found = []
    for path in sorted((REPO / "reg2rg_lib").rglob("*.py")):
        if path == Path(P.__file__):
            continue
        where = path.relative_to(REPO)
        found += [f"{where}:{line}: {text!r}" for line, text in spelled(path.read_text(), names)]
    for path in sorted((REPO / "notebooks").glob("*.ipynb")):
        for i, cell in enumerate(nbformat.read(path, as_version=4).cells):
            if cell.cell_type == "code":
                lines = cell.source.splitlines()
                code = "\n".join(line for line in lines if not line.lstrip().startswith("%"))  # no magics
                found += [f"{path.name} cell {i}:{line}: {text!r}" for line, text in spelled(code, names)]
    where = "reg2rg_lib.paths (MetricsFolder, RunFolder, ReleaseFolder)"
    assert not found, f"file names to take from {where}:\n" + "\n".join(found)
