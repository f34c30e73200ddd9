"""The model-free read-out of a region's texture crop (the instrument's `crop_auc`)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from reg2rg_lib.metrics.crop_readout import crop_arrays, crop_features


def _crop(level: float, seed: int) -> torch.Tensor:
    """A region at `level` (with noise) filling half the crop, the masked background (-1) the rest."""
    g = torch.Generator().manual_seed(seed)
    x = torch.full((16, 16, 4), -1.0)
    x[:, :8] = level + 0.02 * torch.randn((16, 8, 4), generator=g)
    return x


def test_features_tell_the_regions_level_and_ignore_the_background():
    lung, consolidation = crop_features(_crop(-0.75, 0)), crop_features(_crop(0.7, 0))
    assert lung.shape == consolidation.shape and np.isfinite(lung).all()
    assert np.abs(lung - consolidation).max() > 0.5  # the level is read (a patch LayerNorm would hide it)
    bigger_background = torch.full((16, 32, 4), -1.0)
    bigger_background[:, :8] = _crop(-0.75, 0)[:, :8]
    np.testing.assert_allclose(crop_features(bigger_background), lung)  # only the voxels inside the region
    assert np.isfinite(crop_features(torch.full((4, 4, 4), -1.0))).all()  # an empty crop is still a vector


class _Cache:
    """Two regions; a case is positive for "Consolidation" when its lung crop is bright; the thyroid exists
    in test cases only."""

    def __init__(self) -> None:
        self.records, self.tensors = [], {}
        rng = np.random.default_rng(0)
        for split, n in (("train", 60), ("test", 40)):
            for k in range(n):
                positive = k % 2 == 0
                regions = ["lung"] + (["thyroid"] if split == "test" else [])
                name = f"{split}_{k}"
                self.records.append(SimpleNamespace(name=name, split=split, regions=regions,
                                                    labels={"Consolidation": int(positive),
                                                            "Lung nodule": int(rng.random() < 0.5)}))
                crops = [_crop(0.7 if positive else -0.75, k)] + [_crop(0.0, k)] * (len(regions) - 1)
                self.tensors[name] = torch.stack(crops)

    def cases(self, split=None):
        return [r for r in self.records if split is None or r.split == split]

    def load(self, name, keys=None):
        return {"texture": self.tensors[name]}


def test_arrays_pair_each_case_with_its_label_and_say_when_a_region_is_missing():
    from reg2rg_lib.metrics.image_use import probe_auc

    arrays = crop_arrays(_Cache(), "test", {"Consolidation": "lung", "Lung nodule": "lung",
                                            "Thyroid thing": "thyroid"})
    xt, yt, xe, ye = arrays["Consolidation"]
    assert xt.shape[0] == len(yt) == 60 and xe.shape[0] == len(ye) == 40 and yt.sum() == 30
    assert probe_auc(xt, yt, xe, ye)[0] == 1.0  # the bright lungs are the positive ones
    assert probe_auc(*arrays["Lung nodule"])[0] < 0.75  # a label the crops do not show
    assert arrays["Thyroid thing"] == "crop: no train case has the thyroid"


def test_a_single_class_train_split_is_named_in_the_columns_note():
    from reg2rg_lib.metrics.image_use import probe_auc

    x = np.zeros((4, 2))
    auc, note = probe_auc(x, np.zeros(4), x, np.array([0, 1, 0, 1]), name="crop")
    assert np.isnan(auc) and note == "crop: 0 positive of 4 train cases (needs both classes)"
