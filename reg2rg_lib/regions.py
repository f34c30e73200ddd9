"""Names shared by every stage: the 10 anatomical regions, the 18 CT-RATE abnormality labels, plot colours.

One place for these so that data prep, prompts, metrics and figures agree on spelling and order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: The 10 RadGenome-ChestCT regions, in the canonical (alphabetical) order used at test time.
#: The spelling "trachea and bronchie" is the dataset's own (mask file names contain the spaces).
REGIONS: tuple[str, ...] = (
    "abdomen",
    "bone",
    "breast",
    "esophagus",
    "heart",
    "lung",
    "mediastinum",
    "pleura",
    "thyroid",
    "trachea and bronchie",
)

#: The 18 CT-RATE abnormality labels, in the column order of `<split>_predicted_labels.csv`.
LABELS: tuple[str, ...] = (
    "Medical material",
    "Arterial wall calcification",
    "Cardiomegaly",
    "Pericardial effusion",
    "Coronary artery wall calcification",
    "Hiatal hernia",
    "Lymphadenopathy",
    "Emphysema",
    "Atelectasis",
    "Lung nodule",
    "Lung opacity",
    "Pulmonary fibrotic sequela",
    "Pleural effusion",
    "Mosaic attenuation pattern",
    "Peribronchial thickening",
    "Consolidation",
    "Bronchiectasis",
    "Interlobular septal thickening",
)

#: The region whose paragraph reports each label (the embedded benchmark's own placement, and where CT-RATE's
#: findings sit anatomically; medical material: the benchmark's sternotomy wires, in the bone paragraph).
#: `train.label_weight` reads a case's labels as its regions' targets through it.
LABEL_REGIONS: dict[str, str] = {
    "Medical material": "bone",
    "Arterial wall calcification": "mediastinum",
    "Cardiomegaly": "heart",
    "Pericardial effusion": "heart",
    "Coronary artery wall calcification": "heart",
    "Hiatal hernia": "esophagus",
    "Lymphadenopathy": "mediastinum",
    "Emphysema": "lung",
    "Atelectasis": "lung",
    "Lung nodule": "lung",
    "Lung opacity": "lung",
    "Pulmonary fibrotic sequela": "lung",
    "Pleural effusion": "pleura",
    "Mosaic attenuation pattern": "lung",
    "Peribronchial thickening": "trachea and bronchie",
    "Consolidation": "lung",
    "Bronchiectasis": "trachea and bronchie",
    "Interlobular septal thickening": "lung",
}
assert tuple(LABEL_REGIONS) == LABELS and set(LABEL_REGIONS.values()) <= set(REGIONS)

#: One colour per region (matplotlib-compatible hex), stable across all figures and the explorer.
REGION_COLORS: dict[str, str] = {
    "abdomen": "#8c564b",
    "bone": "#e6e6e6",
    "breast": "#e377c2",
    "esophagus": "#ff7f0e",
    "heart": "#d62728",
    "lung": "#1f77b4",
    "mediastinum": "#9467bd",
    "pleura": "#17becf",
    "thyroid": "#bcbd22",
    "trachea and bronchie": "#2ca02c",
}



#: "The region 3 is trachea and bronchie:" -> index 3, name "trachea and bronchie". Known names are tried
#: first (longest first); any other name up to the colon is kept as written, so a hallucinated organ still
#: counts.
_KNOWN = "|".join(re.escape(r) for r in sorted(REGIONS, key=len, reverse=True))
REGION_PREFIX = re.compile(rf"The region (\d+) is ({_KNOWN}|[^:{{}}]*?)\s*:\s?", re.IGNORECASE)
#: the colon is optional: generated reports sometimes drop it ("The other report is {mediastinum: ...}")
OTHER_PREFIX = re.compile(r"The other report is\s*:?\s?", re.IGNORECASE)
#: "{pleura: No pleural effusion.}" -> ("pleura", "No pleural effusion."); a block cut off by the generation
#: length limit ("{other: The sulci are") is unwrapped too
BLOCK = re.compile(r"\{\s*([^:{}]+?)\s*:\s*([^{}]*)(?:\}|$)")


@dataclass(frozen=True)
class RegionParagraph:
    """One paragraph of a report. `index` is the prompt's region number, None for "other report" blocks."""

    index: int | None
    region: str
    paragraph: str

    def __iter__(self):  # allows `for index, region, paragraph in split_regions(text)`
        return iter((self.index, self.region, self.paragraph))


def _normalise_region(name: str) -> str:
    name = " ".join(name.strip().split())
    low = name.lower()
    return low if low in REGIONS else name


def split_regions(text: str) -> list[RegionParagraph]:
    """Split a report into (index, region, paragraph) in reading order.

    Numbered "The region i is X:" paragraphs come with their index; blocks after "The other report is:" come
    with index None and their block name (empty blocks are dropped). Text before the first prefix, if any, is
    returned as region "" with index None, so no words are lost.
    """
    text = "" if text is None else str(text)
    out: list[RegionParagraph] = []
    other = OTHER_PREFIX.search(text)
    main, tail = (text[: other.start()], text[other.end():]) if other else (text, "")
    matches = list(REGION_PREFIX.finditer(main))
    head = main[: matches[0].start()] if matches else main
    if head.strip():
        out.append(RegionParagraph(None, "", head.strip()))
    for m, nxt in zip(matches, matches[1:] + [None]):
        body = main[m.end(): nxt.start() if nxt else len(main)].strip()
        out.append(RegionParagraph(int(m.group(1)), _normalise_region(m.group(2)), body))
    pos = 0
    for m in BLOCK.finditer(tail):
        loose = tail[pos: m.start()].strip()
        if loose:
            out.append(RegionParagraph(None, "", loose))
        if m.group(2).strip():
            out.append(RegionParagraph(None, _normalise_region(m.group(1)), m.group(2).strip()))
        pos = m.end()
    if tail[pos:].strip():
        out.append(RegionParagraph(None, "", tail[pos:].strip()))
    return out


def strip_region_prefix(text: str) -> str:
    """The report without "The region i is X:" prefixes and with "{name: ...}" blocks unwrapped.

    Paragraphs are joined by single spaces; on the released CTRG predictions this reproduces the authors'
    `*_rm_region_text.csv` exactly.
    """
    return " ".join(p.paragraph for p in split_regions(text) if p.paragraph)


def region_sequence(text: str) -> dict[int, str]:
    """{prompt region index: region name} from the numbered prefixes (what region recognition scores)."""
    return {p.index: p.region for p in split_regions(text) if p.index is not None}
