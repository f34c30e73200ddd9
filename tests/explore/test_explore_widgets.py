"""The ipywidgets explorer driven through its callbacks, without a browser: what the image and report show."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from reg2rg_lib.data.sources import ArraySource
from reg2rg_lib.errors import BadInputError
from reg2rg_lib.explore.case_sources import Explorable, read_prediction_table
from reg2rg_lib.explore.widgets import Explorer
from reg2rg_lib.infer.predictions import PRED_COLUMNS

GT = ("The region 0 is heart: Heart size is normal. "
      "The region 1 is lung: A 6 mm nodule in the right upper lobe. Pleural effusion on the left.")
PRED_A = (
    "The region 0 is heart: Heart size is enlarged. The region 1 is lung: A nodule in the right upper lobe."
)
PRED_B = "The region 0 is lung: The lungs are clear. The region 1 is heart: Cardiomegaly."


def _case(seed: int):
    rng = np.random.default_rng(seed)
    vol = rng.normal(-700, 100, (24, 20, 12)).astype(np.float32)  # (X, Y, Z) HU
    heart = np.zeros(vol.shape, bool)
    heart[4:10, 5:12, 2:5] = True  # largest axial extent in slices 2..4
    lung = np.zeros(vol.shape, bool)
    lung[12:22, 3:17, 6:11] = True
    lung[12:22, 3:17, 8] = False
    lung[10:23, 2:18, 9] = True  # the largest lung slice is 9
    return vol, {"heart": heart, "lung": lung}, (1.0, 1.0, 3.0)


def write_predictions(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(PRED_COLUMNS)
        w.writerows([name, "prompt", gt, pred] for name, gt, pred in rows)
    return path


@pytest.fixture
def explorer(tmp_path):
    cases = {name: (*_case(i), "") for i, name in enumerate(["valid_1_a_1", "valid_2_a_1"])}
    full = write_predictions(tmp_path / "full.csv", [("valid_1_a_1.nii.gz", GT, PRED_A)])
    other = write_predictions(tmp_path / "no_rra.csv", [("valid_1_a_1", GT, PRED_B)])
    return Explorer(Explorable(ArraySource(cases), {"full": full, "no_rra": other}), longest=96)


def test_opens_on_the_predicted_case_with_both_prediction_columns(explorer):
    assert explorer.case.name == "valid_1_a_1"  # AccNum with .nii.gz matched to the volume name
    assert explorer.columns == ["gt", "full", "no_rra"]
    assert set(explorer.paragraph_buttons) == {"heart", "lung"}
    assert bytes(explorer.image.value).startswith(b"\x89PNG")
    assert explorer.highlighted() == [] and "No predictions" not in explorer.notice.value
    # GT vs prediction: the changed word is marked, and no_rra's organ mix-up is flagged
    assert ">normal.</del>" in explorer.cells[("heart", "full")].value
    assert "ground truth: lung" in explorer.cells[("heart", "no_rra")].value


def test_clicking_a_paragraph_highlights_its_mask_and_jumps_to_its_slice(explorer):
    before = bytes(explorer.image.value)
    explorer.paragraph_buttons["lung"].click()
    assert explorer.state.selected == "lung"
    assert explorer.slice_slider.value == 9  # where the lung mask is largest
    assert explorer.focus_picker.value == "lung"
    assert bytes(explorer.image.value) != before
    assert sorted(explorer.highlighted()) == [("lung", "full"), ("lung", "gt"), ("lung", "no_rra")]
    explorer.paragraph_buttons["lung"].click()  # a second click clears the selection
    assert explorer.state.selected is None and explorer.highlighted() == []


def test_selecting_a_region_highlights_its_paragraph(explorer):
    explorer.set_plane("coronal")
    explorer.focus_picker.value = "heart"  # what a user does in the dropdown
    assert explorer.state.selected == "heart"
    assert explorer.slice_slider.value in range(5, 12)  # a coronal slice through the heart
    assert {r for r, _ in explorer.highlighted()} == {"heart"}
    assert 'data-selected="true"' in explorer.cells[("heart", "gt")].value
    assert 'data-selected="false"' in explorer.cells[("lung", "gt")].value


def test_slider_window_plane_and_overlay_toggles_change_the_image(explorer):
    seen = {bytes(explorer.image.value)}
    explorer.slice_slider.value = 3
    assert explorer.state.slice_index(explorer.case.volume.shape) == 3
    seen.add(bytes(explorer.image.value))
    explorer.window_picker.value = "lung"
    seen.add(bytes(explorer.image.value))
    explorer.overlay_toggles["heart"].value = False
    assert "heart" not in explorer.state.visible
    seen.add(bytes(explorer.image.value))
    explorer.plane_picker.value = "sagittal"
    seen.add(bytes(explorer.image.value))
    assert len(seen) == 5  # every change drew a different picture
    explorer.overlay_toggles["heart"].value = True
    explorer.plane_picker.value = "axial"
    explorer.window_picker.value = "mediastinum"
    assert bytes(explorer.image.value) == explorer.render()


def test_case_without_predictions_shows_ground_truth_only_and_says_so(explorer):
    old_button, old_cell = explorer.paragraph_buttons["heart"], explorer.cells[("heart", "full")]
    explorer.case_picker.value = "valid_2_a_1"
    assert old_button.comm is None and old_cell.comm is None  # the previous case's widgets were closed
    assert explorer.case.name == "valid_2_a_1" and explorer.columns == ["gt"]
    assert "No predictions" in explorer.notice.value and "do not cover it" in explorer.notice.value
    assert explorer.state.selected is None


def test_metrics_and_labeler_findings_are_shown(explorer):
    summary = explorer.summary.value
    assert "region recognition" in summary and "no_rra" in summary
    assert "Lung nodule" in summary and "Pleural effusion" in summary  # what the labeler reads in the GT
    assert "missed" in summary  # full misses the effusion


def test_snapshot_png_shows_the_current_view(explorer, tmp_path):
    first = explorer.snapshot(tmp_path / "a.png").read_bytes()
    explorer.select_region("heart")
    second = explorer.snapshot(tmp_path / "b.png").read_bytes()
    assert first.startswith(b"\x89PNG") and first != second
    assert explorer.snapshot(tmp_path / "c.png").read_bytes() == second  # same view, same bytes


def test_prediction_files_are_checked(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(BadInputError, match="bad.csv"):
        read_prediction_table(bad)
    with pytest.raises(BadInputError, match="not found"):
        read_prediction_table(tmp_path / "none.csv")
    released = tmp_path / "released.csv"
    released.write_text(
        'AccNum,Question,GT_whole_report,Pred_whole_report\n12,q,"The region 0 is heart: a.",b\n'
    )
    assert read_prediction_table(released) == {"12": ("The region 0 is heart: a.", "b")}


def test_a_model_without_region_prefixes_is_shown_as_one_whole_report_row(tmp_path):
    cases = {"valid_1_a_1": (*_case(0), "")}
    whole = "Heart size is normal. A 6 mm nodule in the right upper lobe."
    full = write_predictions(tmp_path / "full.csv", [("valid_1_a_1", GT, PRED_A)])
    plain = write_predictions(tmp_path / "no_rra.csv", [("valid_1_a_1", GT, whole)])
    ex = Explorer(Explorable(ArraySource(cases), {"full": full, "no_rra": plain}), longest=96)
    # one extra row for the whole report, not ten missing regions
    assert "(no region)" in ex.paragraph_buttons
    assert "missing from the prediction" not in ex.cells[("heart", "no_rra")].value
    assert "one whole report" in ex.cells[("lung", "no_rra")].value
    row = ex.cells[("(no region)", "no_rra")].value
    assert "Heart size is normal." in row and "<del" in row  # diffed against the whole ground truth
    assert "as one report" in ex.cells[("(no region)", "gt")].value
    assert "region 0 named" not in ex.cells[("heart", "full")].value  # the region-structured run is unchanged


def _nodule_case():
    """A lung of air with a soft-tissue ball at slice 7, and a heart; the largest lung slice is 3."""
    vol = np.full((30, 30, 12), -850.0, np.float32)
    lung = np.zeros(vol.shape, bool)
    lung[2:28, 2:28, 1:11] = True
    lung[0:30, 0:30, 3] = True  # the lung's largest axial slice, far from the nodule
    x, y, z = np.ogrid[:30, :30, :12]
    vol[(x - 18) ** 2 + (y - 12) ** 2 + ((z - 7) * 3) ** 2 <= 16] = 40.0  # 4-voxel radius in-plane, at z = 7
    vol[5, 5:25, 1:11] = 40.0  # a thin vessel running to the lung's edge: not the finding
    heart = np.zeros(vol.shape, bool)
    heart[5:10, 20:26, 2:5] = True
    vol[heart] = 40.0  # soft tissue throughout: nothing unusual in the heart
    return vol, {"heart": heart, "lung": lung & ~heart}, (1.0, 1.0, 3.0)


def test_finding_centre_finds_the_ball_not_the_vessel_nor_the_largest_slice():
    from reg2rg_lib.explore.locate import finding_centre

    vol, masks, spacing = _nodule_case()
    assert finding_centre(vol, masks["lung"], spacing) == (18, 12, 7)
    assert finding_centre(np.full(vol.shape, -850.0), masks["lung"], spacing) is None  # nothing unusual: None
    assert finding_centre(vol, np.zeros(vol.shape, bool), spacing) is None


def test_finding_regions_reads_the_ground_truth_paragraphs():
    from reg2rg_lib.explore.locate import finding_regions

    assert finding_regions(GT) == ["lung"]  # the heart paragraph states no finding
    assert finding_regions("No region prefixes here.") == []


def test_show_finding_opens_at_the_slice_of_the_finding_with_a_translucent_overlay(tmp_path):
    from reg2rg_lib.data import slices as view

    cases = {"valid_1_a_1": (*_nodule_case(), "")}
    preds = write_predictions(tmp_path / "full.csv", [("valid_1_a_1", GT, PRED_A)])
    ex = Explorer(Explorable(ArraySource(cases), {"full": preds}), longest=96)
    assert ex.show_finding() == "lung"  # the region whose ground-truth paragraph states a finding
    assert ex.state.selected == "lung" and ex.state.slice_index((30, 30, 12)) == 7  # not 3, the largest slice
    assert ex.slice_slider.value == 7 and "axial slice 7" in ex.caption.value
    assert sorted(ex.highlighted()) == [("lung", "full"), ("lung", "gt")]
    assert view.ALPHA_SELECTED < 0.3  # the CT under the focused region stays readable
    ex.show_finding("heart")  # nothing unusual in the heart: its largest slice
    assert ex.state.selected == "heart" and ex.slice_slider.value == view.best_slice(
        cases["valid_1_a_1"][1]["heart"], "axial"
    )
