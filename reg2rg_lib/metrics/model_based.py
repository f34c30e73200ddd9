"""Model-based report metrics, run only from weights the user already has on disk; nothing is ever downloaded.

- **BERTScore** (Zhang et al. 2020) through the `bert-score` PyPI package (optional extra `bertscore`:
  `pip install -e ".[bertscore]"`), with any local transformers encoder folder (`config.json`, weights and a
  tokenizer): `reg2rg evaluate model-based --predictions P.csv --bertscore-model PATH --out DIR`. Per-pair
  precision/recall/F1 of greedy cosine matching of contextual token embeddings (layer `num_layers`, default
  the model's last), no idf weighting and no baseline rescaling (both would need files from the hub).
  Writes DIR/bertscore.csv (AccNum, BERTScore_P, BERTScore_R, BERTScore_F1) and DIR/model_metrics.json.

Left out (see README, "Evaluation"): RaTEScore, GREEN and RadGraph-F1; `LEFT_OUT` says why for each.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from reg2rg_lib.errors import BadInputError, KitError
from reg2rg_lib.io import atomic_path, write_json_atomic
from reg2rg_lib.paths import MetricsFolder

logger = logging.getLogger(__name__)

#: metric -> why the kit does not run it (not attempted in this version; each needs more than a path to
#: weights)
LEFT_OUT: dict[str, str] = {
    "RaTEScore": "needs two models (a radiology NER tagger with RaTE's entity labels and a BioLORD sentence "
    "encoder); a random stand-in for the tagger's label set was not built and its local-path "
    "loading not verified",
    "GREEN": "needs a 7B generative judge (GREEN-RadLlama2-7b) whose free-text judgements it parses; a "
    "random "
    "stand-in produces nothing parsable, so the kit could not test it",
    "RadGraph-F1": "the radgraph package's model is its own archive format (not a transformers folder); no "
    "random stand-in of that format could be built for a test, and its local-path loading was "
    "not verified",
}
BERTSCORE_EXTRA = 'pip install -e ".[bertscore]"  (the bert-score package)'


def _model_folder(path: str | os.PathLike[str], metric: str) -> Path:
    path = Path(path).expanduser()
    if not path.is_dir() or not (path / "config.json").is_file():
        raise BadInputError(path, f"{metric} model folder not found or without config.json; give a local "
                                  "transformers folder (weights + tokenizer). Nothing is downloaded")
    return path


def bertscore(references: Sequence[str], predictions: Sequence[str], model_path: str | os.PathLike[str],
              num_layers: int | None = None, batch_size: int = 16, device: str | None = None) -> pd.DataFrame:
    """Per-pair BERTScore precision, recall and F1 (columns BERTScore_P/_R/_F1) with a local encoder."""
    # a local folder with config.json: transformers never looks up the hub
    path = _model_folder(model_path, "BERTScore")
    try:
        # bert_score, transformers: optional and heavy; only this metric needs them
        from bert_score import BERTScorer
        from transformers import AutoConfig
    except ImportError:
        raise KitError(f"BERTScore needs the optional extra: {BERTSCORE_EXTRA}") from None
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    layers = int(num_layers or getattr(config, "num_hidden_layers", 0) or 0)
    if layers <= 0:
        raise BadInputError(path, "cannot tell the model's number of layers; pass --bertscore-layers N")
    scorer = BERTScorer(model_type=str(path), num_layers=layers, batch_size=batch_size,
                        device=device or "cpu", idf=False, rescale_with_baseline=False)
    limit = getattr(config, "max_position_embeddings", 512) or 512
    scorer._tokenizer.model_max_length = min(int(scorer._tokenizer.model_max_length or limit), int(limit))
    empty = sum(not str(p).strip() for p in predictions)
    if empty:
        logger.warning(f"BERTScore: {empty} empty prediction(s) score 0")
    p, r, f = scorer.score([str(x) for x in predictions], [str(x) for x in references])
    return pd.DataFrame(
        {
            "BERTScore_P": p.numpy().astype(np.float64),
            "BERTScore_R": r.numpy().astype(np.float64),
            "BERTScore_F1": f.numpy().astype(np.float64),
        }
    )


def evaluate_model_based(
    ids: Sequence[str],
    references: Sequence[str],
    predictions: Sequence[str],
    out_dir: str | os.PathLike[str],
    bertscore_model: str | os.PathLike[str] | None = None,
    bertscore_layers: int | None = None,
) -> dict[str, Any]:
    """Every model-based metric whose weights were given; DIR/model_metrics.json with the means. A KitError
    when none was given (the message lists the flags)."""
    if bertscore_model is None:
        raise KitError(
            "no model-based metric requested: give --bertscore-model PATH (a local transformers "
            "folder; nothing is downloaded). Not available: "
            + "; ".join(f"{k} ({v})" for k, v in LEFT_OUT.items())
        )
    out = MetricsFolder(out_dir)
    table = bertscore(references, predictions, bertscore_model, num_layers=bertscore_layers)
    table.insert(0, "AccNum", list(ids))
    with atomic_path(out.bertscore) as tmp:
        table.to_csv(tmp, index=False)
    result: dict[str, Any] = {
        k: float(table[k].mean()) for k in ("BERTScore_P", "BERTScore_R", "BERTScore_F1")
    }
    result.update({"n": len(table), "bertscore_model": str(Path(bertscore_model).expanduser().resolve()),
                   "bertscore_layers": bertscore_layers, "left_out": LEFT_OUT})
    write_json_atomic(out.model_metrics, result)
    return result
