"""Parsing "The region i is X:" reports into regions, and stripping the prefixes for NLG."""

from __future__ import annotations

import pytest

from reg2rg_lib.regions import region_sequence, split_regions, strip_region_prefix

REPORT = ("The region 0 is lung: No nodule. The region 1 is trachea and bronchie: Patent airways. "
          "The other report is: {pleura: No effusion.}{other: }")


def test_split_regions_reads_multiword_names_and_other_blocks():
    parts = [tuple(p) for p in split_regions(REPORT)]
    assert parts == [(0, "lung", "No nodule."), (1, "trachea and bronchie", "Patent airways."),
                     (None, "pleura", "No effusion.")]
    assert strip_region_prefix(REPORT) == "No nodule. Patent airways. No effusion."
    assert region_sequence(REPORT) == {0: "lung", 1: "trachea and bronchie"}


@pytest.mark.parametrize(
    "text, want",
    [
        ("Plain report without prefixes.", "Plain report without prefixes."),
        ("Intro. The region 0 is Heart : Normal.", "Intro. Normal."),
        (
            "The region 0 is lung: A. The other report is {mediastinum: B.}",
            "A. B.",
        ),  # colon dropped by the model
        (
            "The region 0 is lung: A. The other report is: {other: cut off by max_new_tokens",
            "A. cut off by max_new_tokens",
        ),
        ("", ""),
    ],
)
def test_strip_region_prefix_variants(text, want):
    assert strip_region_prefix(text) == want
