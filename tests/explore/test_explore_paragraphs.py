"""The explorer's text half: paragraphs, alignment by organ, recognition errors, word diffs, highlight."""

from __future__ import annotations

from reg2rg_lib.explore import paragraphs as rep

GT = (
    "The region 0 is heart: Heart size is normal. The region 1 is lung: A small nodule in the right upper "
    "lobe."
)
PRED = "The region 0 is lung: No nodule in the lungs. The region 1 is heart: Heart size is enlarged."


def test_paragraphs_and_whole_reports():
    pars = rep.paragraphs(GT)
    assert [(p.index, p.region) for p in pars] == [(0, "heart"), (1, "lung")]
    assert pars[1].text == "A small nodule in the right upper lobe."
    assert rep.paragraphs("No prefixes at all.") == [
        rep.Paragraph(-1, rep.WHOLE_REPORT, "No prefixes at all.")
    ]
    assert rep.paragraphs("") == []


def test_repeated_region_blocks_are_merged_into_one_row():
    text = (
        "The region 0 is mediastinum: No mass. The other report is: {mediastinum: No nodes.}{pleura: Thick.}"
    )
    pars = {p.region: p for p in rep.paragraphs(text)}
    assert pars["mediastinum"].index == 0 and pars["mediastinum"].text == "No mass. No nodes."
    assert pars["pleura"].index == -1


def test_align_pairs_by_organ_and_flags_wrong_region_names():
    rows = rep.align(rep.paragraphs(GT), rep.paragraphs(PRED))
    assert list(rows) == ["heart", "lung"]  # canonical order
    assert rows["heart"].pred.text == "Heart size is enlarged."
    # the model called region 1 "heart"; the GT's region 1 is lung
    assert rows["heart"].expected_region == "lung"
    missing = rep.align(rep.paragraphs(GT), rep.paragraphs("The region 0 is heart: Normal."))
    assert missing["lung"].pred is None and missing["heart"].expected_region is None


def test_diff_marks_removed_and_added_words():
    out = rep.diff_html("Heart size is normal.", "Heart size is enlarged.")
    assert out.startswith("Heart size is")
    assert ">normal.</del>" in out and ">enlarged.</ins>" in out
    assert "<del" not in rep.diff_html("same words", "same words")
    assert "&lt;b&gt;" in rep.diff_html("", "<b>")  # text is escaped, never interpreted as HTML


def test_cells_show_highlight_missing_and_recognition_errors():
    rows = rep.align(rep.paragraphs(GT), rep.paragraphs(PRED))
    cell = rep.cell_html(rows["heart"], "full", selected=True)
    assert 'data-selected="true"' in cell and rep.tint("#d62728") in cell
    assert "ground truth: lung" in cell and "<ins" in cell
    plain = rep.cell_html(rows["heart"], "gt", selected=False)
    assert 'data-selected="false"' in plain and "Heart size is normal." in plain and "<ins" not in plain
    gone = rep.align(rep.paragraphs(GT), [])["lung"]
    assert "missing from the prediction" in rep.cell_html(gone, "full", selected=False)


def test_word_overlap_and_tint():
    assert rep.word_overlap("a b c d", "a b c d") == 1.0
    assert 0 < rep.word_overlap("a b c d", "a b x y") < 1
    assert rep.tint("#000000", 0.5) == "#808080" and rep.tint("#ffffff") == "#ffffff"


def test_a_prediction_without_region_prefixes_is_one_whole_report_row():
    whole = "Heart size is normal. A small nodule in the right upper lobe."
    rows = rep.align(rep.paragraphs(GT), rep.paragraphs(whole))
    assert list(rows) == ["heart", "lung", rep.WHOLE_REPORT]
    assert rows[rep.WHOLE_REPORT].gt.text == "Heart size is normal. A small nodule in the right upper lobe."
    assert rows[rep.WHOLE_REPORT].pred.text == whole
    assert all(rows[r].note == rep.WHOLE_NOTE and rows[r].pred is None for r in ("heart", "lung"))
    html = rep.cell_html(rows["heart"], "kit", selected=False)
    assert "missing from the prediction" not in html and "one whole report" in html
    diffed = rep.cell_html(rows[rep.WHOLE_REPORT], "kit", selected=False)
    assert "<del" not in diffed and "<ins" not in diffed  # the same words: nothing marked
    gt_cell = rep.cell_html(
        rep.Row(rep.WHOLE_REPORT, None, None, note=rep.GT_WHOLE_NOTE), "gt", selected=False
    )
    assert "as one report" in gt_cell and "no paragraph" not in gt_cell
    # a region-structured prediction still aligns by organ
    assert rep.align(rep.paragraphs(GT), rep.paragraphs(PRED))["heart"].note is None
