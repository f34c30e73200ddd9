"""Region paragraphs in CT-RATE style, written only from the inserted findings (so text and labels agree).

Each region has three paraphrases of a normal paragraph; each finding kind three paraphrases of its sentence.
The vocabulary is kept small and sentences short: the tiny CPU model writes every region's paragraph at test
time, so the whole report stays around 100-170 words.
"""

from __future__ import annotations

import numpy as np

from reg2rg_lib.data.synth.findings import Finding
from reg2rg_lib.regions import REGIONS

NORMAL: dict[str, tuple[str, ...]] = {
    "abdomen": ("Upper abdominal organs in the sections are normal.",
                "No abnormality is seen in the upper abdomen.",
                "The liver and upper abdominal organs appear normal."),
    "bone": ("No lytic or destructive bone lesion is seen.",
             "Bony structures in the scan field are normal.",
             "The bones are intact, with no destructive lesion."),
    "breast": ("No mass is seen in either breast.",
               "Breast tissue appears normal.",
               "Both breasts are unremarkable."),
    "esophagus": ("The esophagus is normal in calibre.",
                  "The esophagus appears normal.",
                  "No abnormality is seen in the esophagus."),
    "heart": ("Heart size is normal and there is no pericardial effusion.",
              "The heart is of normal size, with no pericardial effusion.",
              "Cardiac contour is normal; no pericardial effusion is seen."),
    "lung": ("Both lungs are clear, with no nodule or consolidation.",
             "Lung parenchyma is normal; no nodule or opacity is seen.",
             "No nodule, opacity or consolidation is seen in either lung."),
    "mediastinum": ("Mediastinal structures are normal, with no enlarged lymph node.",
                    "No mediastinal mass or lymphadenopathy is seen.",
                    "The mediastinum is normal and no enlarged lymph node is seen."),
    "pleura": ("No pleural effusion or thickening is seen.",
               "Pleural surfaces are normal, with no effusion.",
               "There is no pleural effusion."),
    "thyroid": ("The thyroid gland is normal in size and density.",
                "The thyroid appears normal.",
                "No nodule is seen in the thyroid gland."),
    "trachea and bronchie": ("The trachea and both main bronchi are open.",
                             "The trachea and main bronchi are patent, with no obstruction.",
                             "The trachea and bronchi are normal in calibre and open."),
}

ABNORMAL: dict[str, tuple[str, ...]] = {
    "lung_nodule": ("A {size_mm} mm solid nodule is seen in the {lobe}.",
                    "A nodule measuring {size_mm} mm is present in the {lobe}.",
                    "There is a {size_mm} mm nodule in the {lobe}."),
    "consolidation": ("Consolidation is seen in the {lobe}.",
                      "There is an area of consolidation in the {lobe}.",
                      "Consolidation is present in the {lobe}."),
    "lung_opacity": ("Ground-glass opacity is seen in the {lobe}.",
                     "There is a ground-glass opacity in the {lobe}.",
                     "An area of ground-glass opacity is present in the {lobe}."),
    "emphysema": ("Emphysematous changes are seen in both upper lobes.",
                  "Centrilobular emphysema is present in the upper lobes.",
                  "There is emphysema in both upper lobes."),
    "atelectasis": ("Subsegmental atelectasis is seen in the {lobe}.",
                    "There is atelectasis in the {lobe}.",
                    "Linear atelectasis is present in the {lobe}."),
    "passive_atelectasis": ("Passive atelectasis is seen in the {lobe}.",
                            "There is compressive atelectasis in the {lobe}.",
                            "Atelectasis is present in the {lobe} next to the effusion."),
    "pleural_effusion": ("Pleural effusion is seen on the {side}, {size_mm} mm thick.",
                         "There is a {side} pleural effusion measuring {size_mm} mm.",
                         "A {side} pleural effusion of {size_mm} mm is present."),
    "pleural_effusion_bilateral": ("Bilateral pleural effusion is seen, up to {size_mm} mm thick.",
                                   "There is pleural effusion on both sides, measuring up to {size_mm} mm.",
                                   "Bilateral pleural effusion of up to {size_mm} mm is present."),
    "cardiomegaly": ("The heart is enlarged (cardiomegaly).",
                     "Cardiomegaly is present.",
                     "Heart size is increased, consistent with cardiomegaly."),
    "pericardial_effusion": ("Pericardial effusion measuring {size_mm} mm is seen.",
                             "There is a pericardial effusion {size_mm} mm thick.",
                             "A pericardial effusion of {size_mm} mm is present."),
    "coronary_calcification": ("Calcification is seen in the coronary arteries.",
                               "Coronary artery wall calcifications are present.",
                               "There are calcified plaques in the coronary arteries."),
    "arterial_calcification": ("Calcified atherosclerotic plaques are seen in the aortic wall.",
                               "There is calcification of the aortic wall.",
                               "Atherosclerotic calcification is present in the aorta."),
    "lymphadenopathy": ("Enlarged lymph nodes are seen in the mediastinum, up to {size_mm} mm in short axis.",
                        "There is mediastinal lymphadenopathy, measuring up to {size_mm} mm.",
                        "Mediastinal lymph nodes are enlarged, the largest {size_mm} mm in short axis."),
    "hiatal_hernia": ("A hiatal hernia is seen.",
                      "There is a sliding hiatal hernia.",
                      "A hiatal hernia is present at the lower esophagus."),
    "sternotomy_wires": ("Sternotomy wires are seen.",
                         "There are median sternotomy wires.",
                         "Postoperative sternotomy wires are present."),
    "thyroid_nodule": ("A {size_mm} mm hypodense nodule is seen in the {side} lobe of the thyroid.",
                       "There is a {size_mm} mm nodule in the {side} thyroid lobe.",
                       "A hypodense nodule of {size_mm} mm is present in the {side} lobe of the thyroid."),
    "liver_cyst": ("A {size_mm} mm hypodense cyst is seen in the liver.",
                   "There is a {size_mm} mm cyst in the liver.",
                   "A simple liver cyst of {size_mm} mm is present."),
}

#: the order paragraphs appear in the whole report (CT-RATE findings run from the airways outwards)
REPORT_ORDER: tuple[str, ...] = (
    "trachea and bronchie",
    "lung",
    "mediastinum",
    "heart",
    "esophagus",
    "thyroid",
    "pleura",
    "breast",
    "bone",
    "abdomen",
)
assert sorted(REPORT_ORDER) == sorted(REGIONS)

#: a word each positive label's sentence contains (what a test checks in the region paragraph)
LABEL_KEYWORDS: dict[str, str] = {
    "Lung nodule": "nodule", "Consolidation": "consolidation", "Lung opacity": "ground-glass",
    "Emphysema": "emphysema", "Atelectasis": "atelectasis", "Pleural effusion": "pleural effusion",
    "Cardiomegaly": "cardiomegaly", "Pericardial effusion": "pericardial effusion",
    "Coronary artery wall calcification": "coronary", "Arterial wall calcification": "aort",
    "Lymphadenopathy": "lymph", "Hiatal hernia": "hiatal hernia", "Medical material": "sternotomy",
}


def sentence(finding: Finding, rng: np.random.Generator) -> str:
    kind = finding.kind
    if kind == "pleural_effusion" and finding.params.get("side") == "bilateral":
        kind = "pleural_effusion_bilateral"
    return str(rng.choice(ABNORMAL[kind])).format(**finding.params)


def region_paragraphs(
    regions: list[str], findings: list[Finding], rng: np.random.Generator
) -> dict[str, str]:
    """Paragraph per present region: its findings' sentences, or a normal paraphrase when it has none."""
    out = {}
    for region in regions:
        mine = [f for f in findings if f.region == region]
        if mine:
            out[region] = " ".join(sentence(f, rng) for f in mine)
        else:
            out[region] = str(rng.choice(NORMAL[region]))
    return out


def whole_report(paragraphs: dict[str, str]) -> str:
    """The whole-report row: region paragraphs in reading order."""
    return " ".join(paragraphs[r] for r in REPORT_ORDER if r in paragraphs)
