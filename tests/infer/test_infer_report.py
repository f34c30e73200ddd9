"""`assign_paragraphs`: a generated report's paragraphs go to the region in their prompt slot, never lost,
never an empty string taken for a paragraph."""

from __future__ import annotations

from pathlib import Path

from reg2rg_lib.infer.report import CaseGeneration, assign_paragraphs

# a CT with only bone and lung masks: slot 0 is bone, slot 1 is lung (canonical order)
REGIONS = ["bone", "lung"]


def test_paragraphs_follow_the_slot_and_keep_the_name_the_model_wrote():
    text = "The region 0 is lung: The lungs are clear. The region 1 is bone: The bones are intact."
    got = assign_paragraphs(text, REGIONS)
    assert got.paragraphs == {"bone": "The lungs are clear.", "lung": "The bones are intact."}
    assert got.named == {"bone": "lung", "lung": "bone"} and got.unplaced == []


def test_a_missing_and_an_empty_paragraph_are_empty_with_or_without_a_heading():
    got = assign_paragraphs("The region 0 is bone: The bones are intact.", REGIONS)
    assert got.paragraphs == {"bone": "The bones are intact.", "lung": ""} and got.named["lung"] == ""
    got = assign_paragraphs("The region 0 is lung: The lungs are clear. The region 1 is lung:   \n ", REGIONS)
    assert got.paragraphs == {"bone": "The lungs are clear.", "lung": ""}
    assert got.named == {"bone": "lung", "lung": "lung"} and got.unplaced == []


def test_text_no_present_slot_takes_is_kept_with_the_reason():
    text = ("Preamble. The region 0 is bone: The bones are intact. The region 0 is bone: Again bone. "
            "The region 1 is lung: Clear. The region 4 is heart: The heart is enlarged. "
            "The other report is: {mediastinum: No lymphadenopathy.}")
    got = assign_paragraphs(text, REGIONS)
    assert got.paragraphs == {"bone": "The bones are intact.", "lung": "Clear."}
    assert [(u["slot"], u["named"], u["paragraph"]) for u in got.unplaced] == [
        (None, "", "Preamble."), (0, "bone", "Again bone."), (4, "heart", "The heart is enlarged."),
        (None, "mediastinum", "No lymphadenopathy.")]
    whys = [u["why"] for u in got.unplaced]
    assert "text outside every heading" in whys[0] and "another paragraph for slot 0 (bone)" in whys[1]
    assert whys[2] == "slot 4 is not in the prompt (its slots are 0..1)" and "'mediastinum'" in whys[3]


def test_an_empty_first_heading_gives_way_to_a_later_one_with_text():
    got = assign_paragraphs("The region 1 is lung: The region 1 is lung: Clear lungs.", REGIONS)
    assert got.paragraphs == {"bone": "", "lung": "Clear lungs."} and got.unplaced == []


def test_text_without_any_heading_is_unplaced_and_every_region_missing():
    got = assign_paragraphs("Clear lungs without prefixes.", REGIONS)
    assert got.paragraphs == {"bone": "", "lung": ""}
    assert [u["paragraph"] for u in got.unplaced] == ["Clear lungs without prefixes."]


def test_case_generation_lists_its_missing_regions():
    gen = CaseGeneration(
        "valid_1_a_1",
        Path("ct.nii.gz"),
        Path("seg"),
        REGIONS,
        {"bone": "Intact.", "lung": " \n"},
        {"bone": "bone", "lung": "lung"},
        [],
        "t",
        "q",
        "greedy",
    )
    assert gen.missing == ["lung"] and gen.unplaced == []
