"""The validation split: carved out of the train volumes by a list at the root, its own random stream, so
adding it changes no train or test case, and every stage (index, manifest, prep cache) sees three disjoint
splits."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from reg2rg_lib.data.layout import VALIDATION_LIST, scan_layout, write_validation_list
from reg2rg_lib.data.manifest import index_dataset
from reg2rg_lib.data.prep import PrepParams, load_cache, prepare
from reg2rg_lib.data.synth.build import synthesize
from reg2rg_lib.errors import BadInputError

SHAPE = (64, 64, 16)


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("val")
    without, with_val = root / "plain", root / "val"
    synthesize(without, 3, 1, seed=2, shape=SHAPE, progress=False)
    synthesize(with_val, 3, 1, seed=2, shape=SHAPE, progress=False, n_validation=2)
    return without, with_val


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_validation_volumes_are_listed_train_volumes(pair):
    _, root = pair
    assert (root / VALIDATION_LIST).read_text().split() == ["train_4_a_1", "train_5_a_1"]
    layout = scan_layout(root)
    assert layout.names("train") == ["train_1_a_1", "train_2_a_1", "train_3_a_1"]
    assert layout.names("validation") == ["train_4_a_1", "train_5_a_1"]
    assert layout.names("test") == ["valid_1_a_1"]
    splits = {c.name: c.split for c in index_dataset(root).cases}
    assert sorted(splits.values()) == ["test", "train", "train", "train", "validation", "validation"]


def test_adding_validation_changes_no_train_or_test_case(pair):
    plain, root = pair
    for rel in ("train_preprocessed/train_3/train_3a/train_3_a_1.nii.gz",
                "valid_preprocessed/valid_1/valid_1a/valid_1_a_1.nii.gz",
                "train_region_mask/seg_train_2_a_1/lung.nii.gz"):
        assert _sha(plain / rel) == _sha(root / rel), rel
    # validation cases come from their own stream: not copies of train cases
    assert _sha(root / "train_preprocessed/train_4/train_4a/train_4_a_1.nii.gz") != \
        _sha(root / "train_preprocessed/train_1/train_1a/train_1_a_1.nii.gz")
    assert not (plain / VALIDATION_LIST).exists()


def test_more_train_cases_change_no_earlier_train_validation_or_test_case(pair, tmp_path):
    """Growing the train split (the demo went from 200 to 600 cases) keeps every other case: the validation
    cases are renumbered after the train split's but hold the same volumes."""
    _, root = pair
    more = tmp_path / "more"
    synthesize(more, 4, 1, seed=2, shape=SHAPE, progress=False, n_validation=2)
    for rel in ("train_preprocessed/train_3/train_3a/train_3_a_1.nii.gz",
                "valid_preprocessed/valid_1/valid_1a/valid_1_a_1.nii.gz"):
        assert _sha(root / rel) == _sha(more / rel), rel
    assert _sha(root / "train_preprocessed/train_4/train_4a/train_4_a_1.nii.gz") == \
        _sha(more / "train_preprocessed/train_5/train_5a/train_5_a_1.nii.gz")  # validation case 1


def test_prep_cache_keeps_three_disjoint_splits(pair, tmp_path):
    _, root = pair
    cache = prepare(root, tmp_path / "cache", PrepParams(image_size=(32, 32, 8)), progress=False)
    names = {s: {r.name for r in cache.cases(s)} for s in ("train", "validation", "test")}
    assert names["validation"] == {"train_4_a_1", "train_5_a_1"}
    assert not names["train"] & names["validation"] and not names["test"] & names["validation"]
    assert cache.manifest["counts"]["validation"] == 2
    # a changed list re-splits the reused entries without recomputing them
    write_validation_list(root, ["train_5_a_1"])
    try:
        again = prepare(root, tmp_path / "cache", PrepParams(image_size=(32, 32, 8)), progress=False)
        assert {r.name for r in again.cases("validation")} == {"train_5_a_1"}
        assert again.manifest["counts"]["computed"] == 0
        assert {r.name for r in load_cache(tmp_path / "cache").cases("train")} >= {"train_4_a_1"}
    finally:
        write_validation_list(root, ["train_4_a_1", "train_5_a_1"])


@pytest.mark.parametrize("text, problem", [("train_9_a_1\n", "does not have: train_9_a_1"),
                                            ("valid_1_a_1\n", "must be train volumes")])
def test_bad_validation_list_names_the_file(pair, tmp_path, text, problem):
    _, root = pair
    keep = (root / VALIDATION_LIST).read_text()
    (root / VALIDATION_LIST).write_text(text)
    try:
        with pytest.raises(BadInputError, match=problem) as err:
            scan_layout(root)
        assert VALIDATION_LIST in str(err.value)
    finally:
        (root / VALIDATION_LIST).write_text(keep)
