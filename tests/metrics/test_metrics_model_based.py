"""BERTScore from a local folder, tested with a tiny randomly initialised BERT the test builds (never a
download), and the messages when no model or no package is there."""

from __future__ import annotations

import json
import sys

import pandas as pd
import pytest

from reg2rg_lib.cli import main
from reg2rg_lib.errors import BadInputError, KitError
from reg2rg_lib.metrics.model_based import LEFT_OUT, bertscore, evaluate_model_based

pytest.importorskip("bert_score", reason="optional extra `bertscore` not installed")

REFS = ["the heart is enlarged .", "no pleural effusion .", "a nodule in the left lung ."]
PREDS = ["the heart is enlarged .", "a nodule in the right lung .", "no nodule ."]


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """A 2-layer BertModel with random weights and a word-level vocabulary, saved with save_pretrained."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    root = tmp_path_factory.mktemp("tiny_bert")
    words = sorted({w for t in REFS + PREDS for w in t.split()})
    (root / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    tok = BertTokenizer(str(root / "vocab.txt"), model_max_length=64)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=64)
    model_dir = root / "model"
    BertModel(cfg).eval().save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    return model_dir


def _by_hand(model_dir, ref: str, hyp: str, layer: int) -> tuple[float, float, float]:
    """Greedy cosine matching of layer-`layer` token embeddings (Zhang et al. 2020): each token of one side
    takes its best match among all tokens of the other, [CLS]/[SEP] included there (bert-score's masks cover
    padding only), and the average leaves [CLS]/[SEP] out (their idf weight is 0)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok, model = AutoTokenizer.from_pretrained(model_dir), AutoModel.from_pretrained(model_dir).eval()

    def emb(text):
        enc = tok(text, return_tensors="pt")
        with torch.no_grad():
            h = model(**enc, output_hidden_states=True).hidden_states[layer][0]  # (T, D) with CLS and SEP
        return torch.nn.functional.normalize(h, dim=-1)

    r, c = emb(ref), emb(hyp)
    sim = c @ r.T  # (Tc, Tr)
    # candidate tokens without CLS/SEP, best over all reference tokens
    p = sim.max(1).values[1:-1].mean().item()
    rec = sim.max(0).values[1:-1].mean().item()
    return p, rec, 2 * p * rec / (p + rec)


def test_bertscore_matches_the_definition(tiny_bert):
    got = bertscore(REFS, PREDS, tiny_bert)
    assert got["BERTScore_F1"].iloc[0] == pytest.approx(1.0, abs=1e-5)  # identical texts
    for i in (1, 2):
        p, r, f = _by_hand(tiny_bert, REFS[i], PREDS[i], layer=2)
        assert tuple(got.iloc[i]) == pytest.approx((p, r, f), abs=1e-5)
    first = bertscore(REFS, PREDS, tiny_bert, num_layers=1)
    assert tuple(first.iloc[1]) == pytest.approx(_by_hand(tiny_bert, REFS[1], PREDS[1], layer=1), abs=1e-5)


def test_cli_model_based_writes_scores(tiny_bert, tmp_path, capsys):
    pd.DataFrame(
        {"AccNum": ["a", "b", "c"], "GT_combined_report": REFS, "Pred_combined_report": PREDS}
    ).to_csv(tmp_path / "p.csv", index=False)
    assert main(["evaluate", "model-based", "--predictions", str(tmp_path / "p.csv"), "--bertscore-model",
                 str(tiny_bert), "--out", str(tmp_path / "o")]) == 0
    table = pd.read_csv(tmp_path / "o" / "bertscore.csv")
    assert list(table.columns) == ["AccNum", "BERTScore_P", "BERTScore_R", "BERTScore_F1"]
    summary = json.loads((tmp_path / "o" / "model_metrics.json").read_text())
    assert summary["BERTScore_F1"] == pytest.approx(table["BERTScore_F1"].mean())
    assert set(summary["left_out"]) == set(LEFT_OUT)
    assert "BERTScore on 3 pairs" in capsys.readouterr().out


def test_no_model_or_no_folder_is_a_clear_message(tmp_path, capsys):
    with pytest.raises(KitError, match="no model-based metric requested: give --bertscore-model PATH"):
        evaluate_model_based(["a"], ["x"], ["y"], tmp_path)
    with pytest.raises(BadInputError, match="BERTScore model folder not found or without config.json"):
        bertscore(["x"], ["y"], tmp_path / "absent")
    pd.DataFrame({"AccNum": ["a"], "GT_combined_report": ["x"], "Pred_combined_report": ["y"]}).to_csv(
        tmp_path / "p.csv", index=False)
    assert (
        main(["evaluate", "model-based", "--predictions", str(tmp_path / "p.csv"), "--out", str(tmp_path)])
        == 2
    )
    assert capsys.readouterr().err.startswith("error: no model-based metric requested")


def test_missing_package_names_the_extra(tmp_path, monkeypatch, tiny_bert):
    monkeypatch.setitem(sys.modules, "bert_score", None)  # import bert_score -> ImportError
    with pytest.raises(KitError, match=r"optional extra: pip install -e \"\.\[bertscore\]\""):
        bertscore(["x"], ["y"], tiny_bert)
