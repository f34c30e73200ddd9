"""The paper's evaluation, offline: NLG metrics, clinical efficacy, region recognition, plus bootstrap CIs.

Modules
- `reports`: parse "The region i is <organ>: ..." reports (`split_regions`, `strip_region_prefix`).
- `nlg`: BLEU-1..4, METEOR, ROUGE-1/2/L, CIDEr exactly as the authors computed them (`evaluate_nlg`).
- `nltk_assets`: WordNet + Punkt for METEOR without nltk's downloader (`reg2rg assets fetch` builds them).
- `labeler`: report -> 18 CT-RATE labels (`RuleLabeler`, or a local transformers classifier).
- `ce`: clinical-efficacy precision/recall/F1 in the authors' file formats (`evaluate_ce`).
- `region`: region-recognition accuracy and per-region P/R/F1 (`region_recognition`) and topic consistency
  (the share of generated paragraphs whose sentences belong to the organ they name: `topic_consistency`).
- `region_ce`: region-level CE (`region_ce`, the authors' `all_regions_macro_avg_results.csv`).
- `image_use`: does the model read the image? Per benchmark label, a probe of the spliced region vectors
  (carried), the teacher-forced log-odds AUC with the case's own vectors (used) and another case's (control)
  (`evaluate_image_use`, `image_use_table`).
- `crg`: the VLM3D challenge's CRG over the label table (`crg_score`).
- `grounded`: grounded finding accuracy against the embedded benchmark's ground truth (`grounded_findings`).
- `model_based`: BERTScore from a local model folder only (`bertscore`; optional extra `bertscore`).
- `stats`: bootstrap CIs and the paired bootstrap test (`reg2rg evaluate compare`).
- `pipeline`: `evaluate_predictions(pred_csv, out_dir, labels=None, ...)`, the one call notebooks 04/05 use.
- `csv_inputs`: reading prediction/label CSVs with one-line errors.
Command line: `reg2rg evaluate nlg|ce|region|region-ce|grounded|model-based|image-use|compare|all`; benchmark:
`reg2rg bench metrics`.
"""

from __future__ import annotations

from typing import Any

from reg2rg_lib.metrics.pipeline import evaluate_predictions as _evaluate

__all__ = ["evaluate_predictions"]


def evaluate_predictions(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """See `reg2rg_lib.metrics.pipeline.evaluate_predictions` (imported lazily: the metric libraries are
    heavy)."""
    return _evaluate(*args, **kwargs)
