"""Names shared by every stage: the 10 anatomical regions, the 18 CT-RATE abnormality labels, plot colours.

One place for these so that data prep, prompts, metrics and figures agree on spelling and order.
"""

from __future__ import annotations

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


def region_index(name: str) -> int:
    """Index of a region in `REGIONS`; raises a ValueError naming the known regions."""
    try:
        return REGIONS.index(name)
    except ValueError:
        raise ValueError(f"unknown region {name!r}; expected one of {', '.join(REGIONS)}") from None
