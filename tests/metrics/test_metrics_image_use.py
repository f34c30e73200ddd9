"""The image-use instrument on models whose answer is known: one whose finding sentence follows the heart's
spliced geometry token (used AUC 1, control what the donors' labels give), one that ignores every region
vector (used == control, case by case), and the probe on synthetic vectors. The cases are an in-memory prep
cache (two regions, heart and lung; cardiomegaly drawn into the heart mask's size) so that the answers are
exact and the runs short."""

from __future__ import annotations

import json
import math
import random
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from reg2rg_lib.data.prep import CaseRecord
from reg2rg_lib.data.synth.reports import ABNORMAL, LABEL_KEYWORDS, NORMAL
from reg2rg_lib.errors import KitError
from reg2rg_lib.metrics.grounded import HOME_REGION
from reg2rg_lib.metrics.image_use import (
    BENCHMARK_LABELS,
    CONTROL_SHIFTS,
    LABEL_FINDINGS,
    candidate,
    candidates,
    image_use_table,
    image_use_text,
    label_region,
    probe_auc,
    teacher_forced_scores,
    write_image_use,
)
from reg2rg_lib.model import Reg2RG, Reg2RGConfig, train_tokenizer
from reg2rg_lib.model.prompt import GEOMETRY
from reg2rg_lib.model.reg2rg import KIND_CODES
from reg2rg_lib.regions import LABELS
from reg2rg_lib.samples.dataset import ReportDataset

SIZE = (32, 32, 8)
REGIONS = ["heart", "lung"]  # canonical order: the heart is region 0


from threads import one_thread  # noqa: E402  (tests/threads.py: a second thread only spins on 2 loaded cores)


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


def _mask(big: bool) -> torch.Tensor:
    m = torch.zeros(SIZE)
    if big:
        m[4:28, 4:28, 1:7] = 1.0
    else:
        m[12:20, 12:20, 3:5] = 1.0
    return m


class MemoryCache:
    """A prep cache in memory: `cases(split)` and `load(name, keys)` as `PrepCache` has them."""

    def __init__(self, n_train: int = 16, n_test: int = 16, seed: int = 0,
                 brighter_heart: float = 0.0) -> None:
        """`brighter_heart` 0: every case has the same texture (only the masks differ); else each case has its
        own noise, and a positive case's heart crop is that much brighter (a uniform shift, as consolidation
        raises a lung's density)."""
        rng = random.Random(seed)
        noise = torch.Generator().manual_seed(seed)
        texture = torch.randn((2, *SIZE), generator=noise)
        lung = _mask(True)
        self.root, self.params, self.records, self.tensors = "memory-cache", {}, [], {}
        for split, n in (("train", n_train), ("test", n_test)):
            for k in range(n):
                positive = k % 2 == 0 if split == "train" else rng.random() < 0.5
                name = f"{split}_{k}"
                heart = ABNORMAL["cardiomegaly"][k % 3] if positive else NORMAL["heart"][k % 3]
                labels = {lab: 0 for lab in LABELS} | {"Cardiomegaly": int(positive)}
                self.records.append(CaseRecord(name, split, list(REGIONS),
                                               {"heart": heart, "lung": NORMAL["lung"][rng.randrange(3)]},
                                               labels, heart))
                own = texture.clone()
                if brighter_heart:
                    own = torch.randn((2, *SIZE), generator=noise) * 0.2
                    own[0] += brighter_heart * positive
                self.tensors[name] = {"image": own[:1], "full": own[:1], "texture": own,
                                      "geometry": torch.stack([_mask(positive), lung])}

    def cases(self, split: str | None = None) -> list[CaseRecord]:
        return [r for r in self.records if split is None or r.split == split]

    def load(self, name: str, keys=None) -> dict[str, torch.Tensor]:
        t = self.tensors[name]
        return {k: t[k] for k in (keys or t)}


@pytest.fixture(scope="module")
def cache() -> MemoryCache:
    return MemoryCache()


@pytest.fixture(scope="module")
def tokenizer_texts() -> list[str]:
    fill = {"size_mm": 10, "lobe": "lower lobe of the right lung", "side": "right"}
    texts = [s for v in NORMAL.values() for s in v] + [s.format(**fill) for v in ABNORMAL.values() for s in v]
    return texts * 3


def _model(texts: list[str], **changes) -> Reg2RG:
    with one_thread():
        cfg = Reg2RGConfig.preset("cpu-tiny", image_size=SIZE, **changes)
        return Reg2RG(cfg, train_tokenizer(texts, None, vocab_size=400)).eval()


def _finding_tokens(model: Reg2RG) -> list[int]:
    """Token ids of the cardiomegaly sentences' scored words that no normal heart sentence has."""
    tok = model.tokenizer
    ids = lambda texts: {t for s in texts for t in tok(s, add_special_tokens=False)["input_ids"]}  # noqa: E731
    return sorted(ids([c.scored for c in candidates("Cardiomegaly", "heart")])
                  - ids([c.scored for c in candidates(None, "heart")]))


def copy_heart_geometry(model: Reg2RG, gain: float = 4.0) -> None:
    """Make `model` a known reader of the image: its next-token logits raise the cardiomegaly words by
    `gain` x (the heart's spliced geometry token projected on big-minus-small mask), nothing else. The prompt
    is spliced by the model's own `embed_inputs`, so the token is read where the instrument put it."""
    el = model.embedding_layer
    with torch.no_grad():
        big, small = el.mask_fc(el.mask_encoder(torch.stack([_mask(True), _mask(False)]).unsqueeze(1)))
    direction, middle = big - small, (big + small) / 2
    words = torch.as_tensor(_finding_tokens(model))
    geometry = KIND_CODES[GEOMETRY]

    def forward(input_ids, attention_mask=None, labels=None, use_cache=False, **visual):
        embeds = model.embed_inputs(input_ids, **visual)  # (B, L, D), the real splice
        rows = embeds[model.token_kind[input_ids.to(model.device)] == geometry].reshape(len(input_ids), -1,
                                                                                        embeds.shape[-1])
        x = (rows[:, 0] - middle) @ direction  # region 0 = the heart: > 0 for a big mask
        logits = torch.zeros(*input_ids.shape, len(model.tokenizer))
        logits[:, :, words] += gain * torch.sign(x)[:, None, None]
        return SimpleNamespace(logits=logits)

    model.forward = forward


@pytest.mark.parametrize("rereference", [False, True], ids=["paper-prompt", "rereference"])
def test_a_model_that_copies_the_heart_vector_uses_the_image(cache, tokenizer_texts, rereference):
    model = _model(tokenizer_texts, rereference=rereference)
    copy_heart_geometry(model)
    table = image_use_table(model, cache, "test", labels=["Cardiomegaly"], feature_cache=False, batch_size=8,
                            return_scores=True)
    row = table.set_index("label").loc["Cardiomegaly"]
    y = np.array([r.labels["Cardiomegaly"] for r in cache.cases("test")])
    assert (row["n_pos"], row["n_neg"]) == (y.sum(), len(y) - y.sum()) and 0 < y.sum() < len(y)
    assert row["region"] == "heart"
    assert row["used_auc"] == 1.0 and row["used_logodds_pos"] > row["used_logodds_neg"]
    assert row["carried_auc"] == 1.0  # the heart's geometry token separates the two mask sizes
    # every texture is the same
    assert row["carried_geometry_auc"] == 1.0 and row["carried_texture_auc"] == 0.5
    assert row["crop_auc"] == 0.5 and not row["lost_flag"]  # nor does the crop read-out see a difference
    # the control reads the donors' hearts: its AUC is the donors' labels ranked against the cases' own, over
    # one donor per case for each shift, pooled; that is also the chance level a perfect reader gets
    shifts = table.attrs["shifts"]
    assert len(shifts) == min(CONTROL_SHIFTS, len(y) - 1) and len(set(shifts)) == len(shifts)
    pairs = [(k, (k + s) % len(y)) for s in shifts for k in range(len(y))]
    expected = roc_auc_score([y[k] for k, _ in pairs], [y[d] for _, d in pairs])
    assert row["control_auc"] == pytest.approx(expected)
    assert row["control_chance_auc"] == pytest.approx(expected)
    assert not row["gap_flag"]
    scores = table.attrs["scores"]
    assert set(scores["mode"]) == {"own", "control"} and set(scores["label"]) == {"", "Cardiomegaly"}
    control = scores[scores["mode"] == "control"]
    assert (control.groupby(["case", "scored"])["donor"].nunique() == len(shifts)).all()
    assert (control["donor"] != control["case"]).all()
    assert (scores.loc[scores["mode"] == "own", "donor"] == "").all()


def test_a_model_that_ignores_the_region_vectors_scores_the_same_with_another_cases(cache, tokenizer_texts):
    model = _model(tokenizer_texts)
    el = model.embedding_layer
    with torch.no_grad():
        # every spliced region (and global) vector is 0: the image is not read
        for layer in (el.fc, el.mask_fc):
            layer.weight.zero_()
            layer.bias.zero_()
    table = image_use_table(model, cache, "test", labels=["Cardiomegaly", "Lung nodule"], feature_cache=False,
                            batch_size=16, return_scores=True)
    scores = table.attrs["scores"]
    keys = ["case", "region", "label", "scored"]
    own = scores[scores["mode"] == "own"]
    control = scores[scores["mode"] == "control"].merge(own[keys + ["score"]], on=keys, suffixes=("", "_own"))
    # every donor's row has its own row
    assert len(control) == (scores["mode"] == "control").sum() >= len(own) > 0
    np.testing.assert_allclose(control["score"].to_numpy(), control["score_own"].to_numpy(), atol=1e-4)
    cardio = table.set_index("label").loc["Cardiomegaly"]
    assert cardio["used_auc"] == pytest.approx(cardio["control_auc"])
    assert cardio["carried_auc"] == 0.5  # all-zero vectors carry nothing
    nodule = table.set_index("label").loc["Lung nodule"]
    assert math.isnan(nodule["used_auc"]) and "0 positive" in nodule["note"]


def test_a_finding_the_crop_holds_and_the_patch_layernorm_removes_is_flagged_lost(tokenizer_texts) -> None:
    """A positive case's heart crop is uniformly brighter: the model-free read-out finds it (crop AUC 1), the
    ViT with RadFM's patch LayerNorm removes exactly that (each patch's mean) so the texture tokens do not
    carry it (`lost_flag`), and the same ViT without the LayerNorm (`vit_patch_norm=False`) carries it."""
    bright = MemoryCache(brighter_heart=0.6)
    rows = {}
    for patch_norm in (True, False):
        model = _model(tokenizer_texts, use_geometry=False, vit_patch_norm=patch_norm)
        table = image_use_table(model, bright, "test", labels=["Cardiomegaly"], feature_cache=False,
                                batch_size=16)
        rows[patch_norm] = table.set_index("label").loc["Cardiomegaly"]
    assert rows[True]["crop_auc"] == rows[False]["crop_auc"] == 1.0  # the input is the same
    assert rows[True]["lost_flag"] and rows[True]["carried_auc"] < rows[False]["carried_auc"]
    assert rows[False]["carried_auc"] >= 0.95 and not rows[False]["lost_flag"]
    text = image_use_text(table)
    assert "Cardiomegaly" in text and "in the crop but not carried (" in text


def test_probe_reads_separable_vectors_and_not_random_ones() -> None:
    rng = np.random.default_rng(0)
    y_train, y_test = rng.integers(0, 2, 200), rng.integers(0, 2, 200)
    x_train = rng.normal(size=(200, 16)) + 3.0 * y_train[:, None] * np.eye(16)[0]
    x_test = rng.normal(size=(200, 16)) + 3.0 * y_test[:, None] * np.eye(16)[0]
    auc, why = probe_auc(x_train, y_train, x_test, y_test)
    assert auc > 0.97 and why == ""
    auc, _ = probe_auc(rng.normal(size=(200, 16)), y_train, rng.normal(size=(200, 16)), y_test)
    assert abs(auc - 0.5) < 0.12
    auc, why = probe_auc(x_train, np.zeros(200), x_test, y_test)
    assert math.isnan(auc) and "train" in why


def test_candidates_score_the_words_before_the_first_slot() -> None:
    c = candidate("There is a {side} pleural effusion measuring {size_mm} mm.")
    assert c.scored == "There is a" and c.text == "There is a right pleural effusion measuring 10 mm."
    assert candidate("Cardiomegaly is present.").scored == "Cardiomegaly is present."
    scored = [c.scored for c in candidates("Pleural effusion", "pleura")]
    assert len(scored) == len(set(scored)) and "Bilateral pleural effusion is seen, up to" in scored
    assert [c.scored for c in candidates(None, "heart")] == list(NORMAL["heart"])


def test_every_inserted_label_has_its_generator_region() -> None:
    assert set(LABEL_FINDINGS) == set(LABEL_KEYWORDS) and set(BENCHMARK_LABELS) == set(LABEL_KEYWORDS)
    for label, kinds in LABEL_FINDINGS.items():
        assert all(k in ABNORMAL for k in kinds)
        assert {HOME_REGION.get(k, HOME_REGION.get(k.removesuffix("_bilateral"))) for k in kinds} \
            == {label_region(label)}


def test_unknown_label_and_unlabelled_cases_are_errors(cache, tokenizer_texts) -> None:
    model = _model(tokenizer_texts)
    with pytest.raises(KitError, match="no benchmark sentences for label"):
        image_use_table(model, cache, "test", labels=["Bronchiectasis"], feature_cache=False)
    bare = MemoryCache(2, 2)
    for r in bare.records:
        r.labels.clear()
    with pytest.raises(KitError, match="no label table"):
        image_use_table(model, bare, "test", feature_cache=False)


def test_table_files_and_summary_flag_carried_but_not_used(tmp_path) -> None:
    table = pd.DataFrame(
        [
            {
                "label": "Cardiomegaly",
                "region": "heart",
                "n_pos": 5,
                "n_neg": 20,
                "carried_auc": 1.0,
                "used_auc": 0.5,
                "control_auc": 0.5,
                "gap_flag": True,
                "note": "",
            },
            {
                "label": "Lung nodule",
                "region": "lung",
                "n_pos": 3,
                "n_neg": 22,
                "carried_auc": math.nan,
                "used_auc": 0.95,
                "control_auc": 0.4,
                "gap_flag": False,
                "note": "why",
            },
        ]
    )
    table.attrs.update({"split": "test", "cases": 25, "vectors": "v", "scoring": "s", "control": "c"})
    paths = write_image_use(table, tmp_path)
    assert list(pd.read_csv(paths["csv"])["label"]) == ["Cardiomegaly", "Lung nodule"]
    record = json.loads(paths["json"].read_text())
    assert record["gap_labels"] == ["Cardiomegaly"] and record["rows"][1]["carried_auc"] is None
    assert record["headline"] == {"image_use_carried_labels": 1, "image_use_min_used_auc": 0.5,
                                  "image_use_max_control_auc": 0.5, "image_use_gaps": 1}
    text = image_use_text(table)
    assert "Cardiomegaly" in text and "carried, not used" in text and "n/a" in text
    assert text.splitlines()[-3].endswith("Cardiomegaly")


@pytest.mark.parametrize("changes", [{}, {"rereference": True}, {"rra": False}],
                         ids=["paper-prompt", "rereference", "no-rra"])
def test_the_scored_tokens_are_the_candidates_opening_words_in_its_own_paragraph(
    tokenizer_texts, changes
) -> None:
    from reg2rg_lib.metrics.image_use import _candidate_span
    from reg2rg_lib.model import build_sample
    from reg2rg_lib.samples.dataset import target_token_positions

    model = _model(tokenizer_texts, **changes)
    tok, regions = model.tokenizer, ["heart", "lung", "pleura"]
    for region, label in (("lung", "Lung nodule"), ("pleura", "Pleural effusion"), ("heart", None)):
        for cand in candidates(label, region):
            reports = {r: NORMAL[r][0] for r in regions} | {region: cand.text}
            sample = build_sample(regions, reports, tok, model.config)
            positions = target_token_positions(
                sample, tok, [_candidate_span(sample, regions.index(region), region, cand)]
            )
            assert tok.decode([sample.input_ids[p] for p in positions]).strip() == cand.scored
            assert min(positions) >= sample.n_prompt  # in the target, not the prompt


def test_the_control_can_swap_one_branch(cache, tokenizer_texts):
    """`teacher_forced_scores(control_keys=...)` takes only those region tensors from the donor: a reader of
    the heart's geometry token keeps its own scores when only the texture is swapped, and loses them to the
    donor's when only the mask is (benchmarks/probe_branches.py)."""
    model = _model(tokenizer_texts)
    copy_heart_geometry(model)
    data = ReportDataset(cache, "test", model.tokenizer, model.config, shuffle_regions=False,
                         with_targets=False)
    items = [data[i] for i in range(len(data))]
    regions = {"heart": [None, "Cardiomegaly"]}
    keys = ["case", "label", "scored"]

    def control_vs_own(control_keys):
        scores = teacher_forced_scores(model, data, items, regions, shifts=(1,), control_keys=control_keys)
        own = scores[scores["mode"] == "own"][keys + ["score"]]
        ctrl = scores[scores["mode"] == "control"].merge(own, on=keys, suffixes=("", "_own"))
        assert len(ctrl) == len(own) > 0
        return ctrl["score"].to_numpy(), ctrl["score_own"].to_numpy()

    texture_swapped, own = control_vs_own(("region_feats", "region_images"))
    np.testing.assert_allclose(texture_swapped, own, atol=1e-5)
    mask_swapped, own = control_vs_own(("region_masks",))
    both_swapped, _ = control_vs_own(None)
    np.testing.assert_allclose(mask_swapped, both_swapped, atol=1e-5)
    assert np.abs(mask_swapped - own).max() > 1.0  # the donor's mask moves the reader
    # the table's control with one branch swapped: the texture's leaves the reader at its own AUC
    table = image_use_table(model, cache, "test", labels=["Cardiomegaly"], feature_cache=False, probe=False,
                            control_keys=("region_feats", "region_images"))
    row = table.set_index("label").loc["Cardiomegaly"]
    assert row["used_auc"] == row["control_auc"] == 1.0
    assert "only the donor's region_feats, region_images" in table.attrs["control"]
