"""Report -> 18 CT-RATE abnormality labels, for clinical-efficacy (CE) metrics.

The paper labelled reports with a RadBERT classifier from the hub. Two labelers share one interface,
`labeler.label(texts) -> DataFrame` (one row per text, the 18 `LABELS` as 0/1 int columns):

- `RuleLabeler()`: offline rules. Each label has a few regular expressions (`PATTERNS`, below: the
  documentation of what counts as a mention). Text is split into sentences and clauses; a mention is
  * negated when a negation cue precedes it in its clause ("no", "without", "absence of", "free of", "negative
    for", "neither/nor", "not"), when the clause says it is not there ("... is not
    seen/found/observed/detected", "... is absent", "... has resolved"), or when it continues a negated list
    ("No A, B or C");
  * uncertain when a hedge occurs in its clause ("possible", "probable", "suspicious for", "likely", "may",
    "cannot be excluded", "questionable", ...); "cannot be excluded/ruled out" overrides a negation;
  * otherwise positive.
  A label is 1 when one of its mentions is positive, or uncertain with `uncertain_as_positive=True` (default,
  the "U-ones" policy).
- `TransformersLabeler(path)`: any local transformers sequence classifier with 18 sigmoid outputs (e.g. the
  RadBERT checkpoint the authors used, if you have it); outputs are mapped to LABELS through `config.id2label`
  when its names match, else in order.

`get_labeler("rules" | PATH)` picks one. Agreement of the rules with the released RadBERT labels and with the
exact labels of the embedded benchmark is measured by `agreement()` and written up in
data_manifests/labeler_agreement.md.

One file over 400 lines: about 150 lines are `PATTERNS` and the cue expressions, the rule labeler's own record
of what counts as a mention; the clause and negation rules read them, and `find_mentions` lends the same rules
to grounded findings.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from reg2rg_lib.errors import KitError
from reg2rg_lib.metrics.ce import read_label_table
from reg2rg_lib.metrics.csv_inputs import read_csv_checked
from reg2rg_lib.regions import LABELS

# Building blocks (regex fragments) --------------------------------------------------------------------------
_GAP = r"[^.;:,]{0,40}?"  # a short stretch inside one clause
_ART_NOT_CORONARY = (
    r"(?:aort\w*|(?<!coronary )arter(?:y|ies|ial)|vascular|vessels?|carotid|iliac|atheroscler\w*)"
)

#: label -> regular expressions (lower-cased text, one clause at a time). A match is a mention of the finding.
PATTERNS: dict[str, tuple[str, ...]] = {
    "Medical material": (
        r"\b(?:catheters?|stents?|pacemakers?|defibrillators?|port[- ]a[- ]cath|portacath|chemoport)\b",
        r"\b(?:chest|drainage|drain|endotracheal|tracheostomy|nasogastric|feeding|gastric|thoracostomy) "
        r"tubes?\b",
        r"\btube shadows?\b|\bdrains?\b",
        r"\b(?:surgical |metallic |vascular )?clips?\b|\bsutures?\b|\bstaples?\b|\bsternotomy wires?\b|"
        r"\bcerclage\b",
        r"\bprosthe\w+|\bimplant(?:s|ed|ation)?\b|\belectrodes?\b|\bcoils?\b|\bmetal(?:lic)? (?:material|"
        r"densit\w+|implant\w*|foreign bod\w+|artifacts?)\b|\bfixation (?:material|device|screws?|"
        r"plates?)\b|\bscrews?\b",
        r"\bvalve replacement\b|\bprosthetic valve\b|\bmedical (?:material|device)s?\b|\bforeign bod(?:y|"
        r"ies)\b",
    ),
    "Arterial wall calcification": (
        rf"\b{_ART_NOT_CORONARY}{_GAP}calcif\w*",
        rf"\bcalcif\w*{_GAP}\b{_ART_NOT_CORONARY}",
        r"\batheroscler\w*|\batheromat\w*|\baortic sclerosis\b|\barteriosclero\w*",
    ),
    "Cardiomegaly": (
        r"\bcardiomegaly\b",
        rf"\b(?:heart|cardiac)(?: shadow| size| silhouette)?{_GAP}\b(?:enlarg\w*|larger|increased in size)",
        r"\b(?:heart|cardiac) (?:size|shadow|silhouette) (?:is |was )?(?:mildly |slightly |markedly "
        r")?increased\b",
        rf"\benlarge(?:d|ment of)(?: the)?{_GAP}\b(?:heart|cardiac)\b",
    ),
    "Pericardial effusion": (
        rf"\bpericardi\w*{_GAP}\b(?:effusion|fluid|liquid)",
        rf"\b(?:effusion|fluid|liquid)\w*{_GAP}\bpericardi\w*",
        r"\bhydropericardium\b",
    ),
    "Coronary artery wall calcification": (
        rf"\bcoronar\w*{_GAP}\b(?:calcif\w*|dense shadows?)",
        rf"\b(?:calcif\w*|dense shadows?){_GAP}\bcoronar\w*",
    ),
    "Hiatal hernia": (
        rf"\bhiat(?:al|us) hernia\w*|\bhernia\w*{_GAP}\bhiatus\b",
        r"\b(?:sliding|paraesophageal|para-esophageal) hernia\b",
        rf"\b(?:stomach|gastric fundus){_GAP}\bherniat\w*",
    ),
    "Lymphadenopathy": (
        r"\blymphadenopath\w*",
        r"\b(?:enlarged|enlargement of|swollen|pathologic(?:al)?(?:ly)?(?: enlarged)?|increased|large|"
        rf"larger){_GAP}\blymph nodes?",
        rf"\blymph nodes?{_GAP}\b(?:enlarged|enlargement|swollen|increased in (?:size|number)|larger|"
        r"pathologic\w*)",
        r"\bmediastinal adenopathy\b|\blymph node (?:conglomerat\w*|enlargement)",
    ),
    "Emphysema": (
        r"\bemphysem\w*",
        r"\bbullae\b|\bbulla\b|\bbullous\b|\bblebs?\b",
        r"\b(?:large |big )?bubbles?\b",
    ),
    "Atelectasis": (
        r"\batelecta\w*",
        rf"\b(?:lung|lobe|lobar|segment\w*){_GAP}\bcollaps\w*|\bcollaps\w*{_GAP}\b(?:lung|lobe)\b",
    ),
    "Lung nodule": (
        r"\bnodul\w*|\bmicronodul\w*",
        r"\b(?:pulmonary|lung) mass(?:es)?\b",
    ),
    "Lung opacity": (
        r"\bopacit(?:y|ies)\b|\bground[- ]glass\b(?! (?:density )?nodul)|\binfiltrat\w*|\bexudat\w*",
        rf"\b(?:patchy|flocculent|fuzzy|blurry|blurred|cloudy|hazy|vague|high[- ]density|increased density)"
        rf"{_GAP}\bshadows?\b",
        r"\bdensity increase\w*|\bincreased (?:lung )?densit\w*",
    ),
    "Pulmonary fibrotic sequela": (
        r"\bfibro\w*|\bsequel(?:a|ae)\b|\bscar(?:s|ring)?\b|\bcord (?:bands?|foci)\b",
        r"\b(?:plain|linear|cord[- ]like|strip\w*|band[- ]like|reticular|fibrous) (?:shadows?|strips?|"
        r"streaks?|opacit\w+|densit\w+|bands?|changes?)\b|\bplain strips?\b",
        r"\b(?:grid|net|mesh|honeycomb)[- ]?(?:like|shaped)?\b(?: changes?| shadows?| pattern)|"
        r"\bhoneycomb\w*",
    ),
    "Pleural effusion": (
        rf"\bpleural{_GAP}\b(?:effusion|fluid)",
        rf"\b(?:effusion|fluid|hydrocele|liquid)\w*{_GAP}\b(?:thoracic|pleural|chest) (?:cavit\w+|spaces?)",
        r"\bhydrothorax\b|\bhydrops? (?:of the )?(?:thoracic|chest)\b",
    ),
    "Mosaic attenuation pattern": (
        r"\bmosaic\w*",
        r"\bair[- ]trapping\b",
    ),
    "Peribronchial thickening": (
        rf"\bperibronchi\w*{_GAP}\bthicken\w*",
        rf"\bbronch\w*(?: tube)? walls?{_GAP}\bthicken\w*",
        rf"\bthicken\w*{_GAP}\b(?:peri)?bronch\w*(?: tube)? walls?\b",
        r"\bbronchial (?:wall )?thickening\b|\bperibronchial cuffing\b",
    ),
    "Consolidation": (
        r"\bconsolidat\w*",
        r"\bair bronchograms?\b|\binflat(?:able|ed) bronchi\b",
    ),
    "Bronchiectasis": (
        r"\bbronchiectas\w*|\bbronchiolectas\w*",
        rf"\bbronch(?:i|us|ial|ioles?)\b{_GAP}\b(?:dilat\w*|expan\w*|ectasi\w*)",
        rf"\b(?:dilat\w*|expan\w*){_GAP}\bbronch(?:i|us|ial|ioles?)\b",
    ),
    "Interlobular septal thickening": (
        rf"\b(?:interlobular )?sept(?:a|al|um)\b{_GAP}\bthicken\w*",
        rf"\bthicken\w*{_GAP}\b(?:interlobular )?sept(?:a|al|um)\b",
        r"\binterlobular septal\b|\bcrazy[- ]paving\b",
    ),
}

#: Lung findings: a mention in a clause that names another organ and no lung structure is not counted
#: ("high density shadow in the right lobe of liver", "thyroid nodule").
LUNG_LABELS: frozenset[str] = frozenset({
    "Emphysema", "Atelectasis", "Lung nodule", "Lung opacity", "Pulmonary fibrotic sequela", "Consolidation",
    "Mosaic attenuation pattern", "Bronchiectasis", "Interlobular septal thickening",
})
OTHER_ORGAN = re.compile(
    r"\b(?:liver|hepat\w*|kidneys?|renal|spleen|splen\w*|pancrea\w*|gallbladder|bile|biliary|adrenal|"
    r"vertebra\w*|spine|spinal|ribs?|stern\w*|bones?|thyroid|breasts?|brain|cerebr\w*|ventric\w*|stomach|"
    r"gastric|bowel|intestin\w*|colon|uter\w*|prostat\w*|bladder|skin|muscles?|axilla\w*|armpits?|"
    r"mediastin\w*|esophag\w*|lymph|thymus|pericardi\w*|abdom\w*|pelvi\w*|sacr\w*|iliac|joint)\b"
)
#: ("lobe" is not a lung word: livers and thyroids have lobes too)
LUNG_WORD = re.compile(r"\b(?:lungs?|pulmonar\w*|hil(?:um|a|i|ar)|bronch\w*|pleura\w*|subpleural|fissure|"
                       r"parenchyma\w*|lingula\w*)\b")

#: Negation cues that precede a mention in the same clause.
PRE_NEGATION = re.compile(
    r"\b(?:no|not|without|absence of|absent|free of|negative for|neither|nor|rule out|ruled out|"
    r"resolution of|resolved|cannot see|can not see)\b")
#: Negation stated after the mention, inside the clause.
POST_NEGATION = re.compile(
    r"^[^.;]{0,60}?\b(?:(?:is|are|was|were|has been|have been)\s+)?(?:not|no longer|never)\s+(?:\w+\s+)?"
    r"(?:seen|found|observed|detected|present|identified|evident|visible|noted|shown|demonstrated|"
    r"appreciated)\b|^[^.;]{0,30}?\b(?:is|are|was|were)\s+(?:absent|resolved|gone)\b"
    r"|^[^.;]{0,30}?\b(?:has|have)\s+(?:resolved|disappeared|regressed completely)\b"
)
#: Hedges: the mention is uncertain.
UNCERTAIN = re.compile(
    r"\b(?:possible|possibly|probable|probably|suspicious|suspicion|suspected|suspect|likely|may|might|"
    r"questionable|query|equivocal|indeterminate|cannot be excluded|can not be excluded|not excluded|"
    r"cannot be ruled out|can not be ruled out|not be ruled out|to be excluded|consider|considered)\b|\?")
#: "cannot be excluded" keeps a mention (uncertain) even though it contains a negation word.
NOT_EXCLUDED = re.compile(r"\b(?:cannot|can not|could not|not)\s+be\s+(?:excluded|ruled out)\b")
_SENTENCE_SPLIT = re.compile(r"(?<!\d)\.(?!\d)|[;\n?!]")
_CLAUSE_SPLIT = re.compile(
    r",|:|\bbut\b|\bhowever\b|\balthough\b|\bwhile\b|\bwhereas\b|\bexcept\b|\bapart from\b"
)
_LIST_OR = re.compile(r"\b(?:or|nor)\b")

_COMPILED = {lab: tuple(re.compile(p) for p in pats) for lab, pats in PATTERNS.items()}


@dataclass(frozen=True)
class Mention:
    """One matched finding: label, the clause it sits in, the matched text and its status."""

    label: str
    status: str  # "positive" | "negated" | "uncertain"
    text: str
    clause: str
    # the sentence the clause belongs to (`find_mentions` fills it: sizes sit in other clauses)
    sentence: str = ""


class Labeler(Protocol):
    """What CE needs from a labeler: 0/1 labels for each text."""

    labels: tuple[str, ...]

    def label(self, texts: Sequence[str]) -> pd.DataFrame: ...


def _clauses(sentence: str) -> list[tuple[str, bool]]:
    """Clauses of a sentence, each with whether it inherits a negation from a list ("No A, B or C is seen").

    A clause inherits when the previous clause is negated and short (a bare noun phrase such as "no nodule")
    and the list closes with "or"/"nor" in this clause or in the short clauses right after it.
    """
    parts = _CLAUSE_SPLIT.split(sentence)
    out: list[tuple[str, bool]] = []
    negated_item = False
    for k, part in enumerate(parts):
        inherit = False
        if negated_item:
            for item in parts[k:]:
                if _LIST_OR.search(item):
                    inherit = True
                    break
                if len(item.split()) > 4:
                    break
        out.append((part, inherit))
        starts_negated = bool(re.match(r"\s*(?:no|without|neither|absence of|free of|negative for)\b", part))
        negated_item = (starts_negated or inherit) and len(part.split()) <= 4 and not _LIST_OR.search(part)
    return out


def _status(clause: str, m: re.Match, inherited: bool) -> str:
    before, inside, after = clause[: m.start()], m.group(0), clause[m.end():]
    if NOT_EXCLUDED.search(clause):
        return "uncertain"
    negated = inherited or bool(PRE_NEGATION.search(before)) or bool(re.search(r"\b(?:not|no)\b", inside))
    negated = negated or bool(POST_NEGATION.search(after))
    if negated:
        return "negated"
    return "uncertain" if UNCERTAIN.search(clause) else "positive"


@functools.lru_cache(maxsize=1 << 16)
def _sentence_mentions(sentence: str, labels: tuple[str, ...]) -> tuple[Mention, ...]:
    """Mentions in one lower-cased sentence (memoised: report sentences repeat a lot)."""
    out = []
    for clause, inherited in _clauses(sentence):
        elsewhere = bool(OTHER_ORGAN.search(clause)) and not LUNG_WORD.search(clause)
        for lab in labels:
            if elsewhere and lab in LUNG_LABELS:
                continue
            for pat in _COMPILED[lab]:
                for m in pat.finditer(clause):
                    out.append(Mention(lab, _status(clause, m, inherited), m.group(0), clause.strip()))
    return tuple(out)


def find_mentions(text: str, patterns: Mapping[str, Sequence[re.Pattern]]) -> list[Mention]:
    """Mentions of any named patterns in `text`, split and negated exactly as the rule labeler does (without
    its lung/other-organ filter: the caller knows which region's paragraph it reads). Used by grounded
    findings."""
    out = []
    for sentence in _SENTENCE_SPLIT.split("" if text is None else str(text).lower()):
        for clause, inherited in _clauses(sentence):
            for name, pats in patterns.items():
                for pat in pats:
                    out += [
                        Mention(
                            name, _status(clause, m, inherited), m.group(0), clause.strip(), sentence.strip()
                        )
                        for m in pat.finditer(clause)
                    ]
    return out


class RuleLabeler:
    """Offline 18-label labeler from `PATTERNS` with negation and uncertainty handling (see module
    docstring)."""

    name = "rules"

    def __init__(self, uncertain_as_positive: bool = True, labels: Sequence[str] = LABELS) -> None:
        unknown = [lab for lab in labels if lab not in PATTERNS]
        if unknown:
            raise ValueError(f"no rules for label(s) {unknown}")
        self.labels = tuple(labels)
        self.uncertain_as_positive = uncertain_as_positive

    def mentions(self, text: str) -> list[Mention]:
        """Every mention in `text` with its status (for inspection and tests)."""
        text = "" if text is None else str(text).lower()
        return [
            m for sentence in _SENTENCE_SPLIT.split(text) for m in _sentence_mentions(sentence, self.labels)
        ]

    def label_one(self, text: str) -> dict[str, int]:
        keep = {"positive", "uncertain"} if self.uncertain_as_positive else {"positive"}
        found = {m.label for m in self.mentions(text) if m.status in keep}
        return {lab: int(lab in found) for lab in self.labels}

    def label(self, texts: Sequence[str]) -> pd.DataFrame:
        return pd.DataFrame([self.label_one(t) for t in texts], columns=list(self.labels)).astype(np.int64)


class TransformersLabeler:
    """A local transformers sequence classifier (multi-label, sigmoid > threshold) as a labeler."""

    def __init__(self, path: str | Path, threshold: float = 0.5, batch_size: int = 16, max_length: int = 512,
                 device: str | None = None, labels: Sequence[str] = LABELS) -> None:
        # torch, transformers: slow to import; only the RadBERT labeler needs them
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        path = Path(path)
        if not path.exists():
            raise KitError(f"{path}: labeler checkpoint not found (give a local folder with config.json)")
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModelForSequenceClassification.from_pretrained(path, local_files_only=True).eval()
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device)
        self.labels, self.threshold, self.batch_size, self.max_length = (
            tuple(labels),
            threshold,
            batch_size,
            max_length,
        )
        names = [self.model.config.id2label.get(i, "") for i in range(self.model.config.num_labels)]
        if set(self.labels) <= set(names):
            self.columns = [names.index(lab) for lab in self.labels]
        elif self.model.config.num_labels == len(self.labels):
            self.columns = list(range(len(self.labels)))
        else:
            raise KitError(
                f"{path}: classifier has {self.model.config.num_labels} outputs and labels {names[:5]}..., "
                f"expected the {len(self.labels)} CT-RATE labels"
            )
        self.name = f"transformers:{path}"

    def label(self, texts: Sequence[str]) -> pd.DataFrame:
        # torch: slow to import; only the RadBERT labeler needs it
        import torch

        rows = []
        with torch.inference_mode():
            for i in range(0, len(texts), self.batch_size):
                batch = ["" if t is None else str(t) for t in texts[i: i + self.batch_size]]
                enc = self.tokenizer(batch, padding=True, truncation=True, max_length=self.max_length,
                                     return_tensors="pt").to(self.device)
                probs = torch.sigmoid(self.model(**enc).logits.float())[:, self.columns]  # (b, L)
                rows.append((probs > self.threshold).long().cpu().numpy())
        arr = np.concatenate(rows) if rows else np.zeros((0, len(self.labels)), dtype=np.int64)
        return pd.DataFrame(arr, columns=list(self.labels)).astype(np.int64)


def get_labeler(spec: str | Labeler | None = "rules", **kwargs: Any) -> Labeler:
    """"rules" (default) -> RuleLabeler; a folder path -> TransformersLabeler; a labeler object passes
    through."""
    if spec is None or spec == "rules":
        return RuleLabeler(**kwargs)
    if isinstance(spec, str | Path):
        return TransformersLabeler(spec, **kwargs)
    return spec


def agreement(
    reference: pd.DataFrame, predicted: pd.DataFrame, labels: Sequence[str] = LABELS
) -> pd.DataFrame:
    """Per-label precision/recall/F1 of `predicted` against `reference` (0/1 frames), plus micro/macro
    rows."""
    # sklearn: slow to import (~2 s); only the labeler agreement check needs it
    from sklearn.metrics import precision_recall_fscore_support

    t = reference[list(labels)].to_numpy(dtype=np.int64)
    p = predicted[list(labels)].to_numpy(dtype=np.int64)
    pr, rc, f1, sup = precision_recall_fscore_support(t, p, average=None, zero_division=0)
    rows = [{"label": lab, "precision": pr[i], "recall": rc[i], "f1": f1[i], "support": int(sup[i]),
             "predicted": int(p[:, i].sum()), "agree": float((t[:, i] == p[:, i]).mean()) if len(t) else 0.0}
            for i, lab in enumerate(labels)]
    present = (t.sum(0) + p.sum(0)) > 0  # labels that occur on either side
    for avg, cols in (("micro", slice(None)), ("macro", slice(None)), ("macro (present labels)", present)):
        a = precision_recall_fscore_support(t[:, cols], p[:, cols], average=avg.split()[0], zero_division=0)
        rows.append({"label": f"{avg} avg", "precision": a[0], "recall": a[1], "f1": a[2],
                     "support": int(sup[cols].sum()), "predicted": int(p[:, cols].sum()),
                     "agree": float((t == p).mean()) if t.size else 0.0})
    return pd.DataFrame(rows)


def radbert_agreement(label_table: str | Path, labeler: Labeler | None = None) -> dict[str, pd.DataFrame]:
    """Agreement of `labeler` (rules by default) with the RadBERT labels of a released `label_inferred.csv`.

    Returns {"GT": ..., "Pred": ..., "both": ...}: `agreement` tables with RadBERT as the reference, on the
    reference reports, the generated reports, and both together.
    """
    labeler = labeler or RuleLabeler()
    y_gt, y_pred, _ = read_label_table(label_table)
    texts = read_csv_checked(label_table, ["GT_whole_report", "Pred_whole_report"], what="label table")
    out = {}
    ref = {"GT": pd.DataFrame(y_gt, columns=list(LABELS)), "Pred": pd.DataFrame(y_pred, columns=list(LABELS))}
    ours = {k: labeler.label(texts[f"{k}_whole_report"].fillna("").tolist()) for k in ("GT", "Pred")}
    out.update({k: agreement(ref[k], ours[k]) for k in ("GT", "Pred")})
    out["both"] = agreement(pd.concat([ref["GT"], ref["Pred"]]), pd.concat([ours["GT"], ours["Pred"]]))
    return out
