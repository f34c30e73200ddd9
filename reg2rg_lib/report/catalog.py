"""The kit's tables and figures by number: file name, title and the words that describe each, in one place.

Prose that names "Table 3", "Fig. 3", "Kit Fig. 6" or `kit_fig6_ablation_bars` (notebook markdown, table
captions, the library's own messages) is checked against these entries by `reg2rg_lib.nbtools.prose`: the
number or file name must exist here, and a sentence that names one table but describes another (its words
match only another entry's `words`) is drift. Renaming a figure file or renumbering a figure means changing
its entry here; `tests/nbtools/test_nbtools_prose.py` checks that the entries match the files the kit commits
under `figures/` and `figures/tables/`.

`words` are lower-case regular expressions, searched in a lower-cased sentence; an entry's `title` is what the
drift report quotes.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Entry:
    """One table or figure: its number in prose, the file stem it is written as, its title and its words."""

    number: int
    stem: str
    title: str
    words: tuple[str, ...]
    origin: str  # "paper": the paper's table or figure, regenerated; "kit": the kit's own


#: Tables 1-7 are the paper's (`report.tables`, `report.regenerate`); 8 and 9 are the kit's own
#: (`report.tables` too).
TABLES: dict[int, Entry] = {
    e.number: e
    for e in (
        Entry(
            1,
            "table1_nlg",
            "NLG metrics",
            (r"\bnlg\b", r"bleu", r"meteor", r"rouge", r"cider", r"report quality"),
            "paper",
        ),
        Entry(
            2,
            "table2_ce",
            "clinical efficacy over the 18 CT-RATE labels",
            (r"clinical efficacy", r"\bce\b", r"\bcrg\b", r"precision", r"abnormalit", r"radbert"),
            "paper",
        ),
        Entry(
            3,
            "table3_region_recognition",
            "region recognition",
            (
                r"region recognition",
                r"organ[- ]?nam",
                r"organ is named",
                r"nam(?:e|es|ed|ing) (?:the|its|each) organ",
                r"the region i is",
                r"region accuracy",
                r"topic consistency",
            ),
            "paper",
        ),
        Entry(
            4,
            "table4_lfd",
            "local feature decoupling (LFD)",
            (r"\blfd\b", r"local feature decoupling", r"ablation"),
            "paper",
        ),
        Entry(
            5,
            "table5_region_features",
            "region features (texture, + geometry, + global = full)",
            (r"region features", r"texture", r"geometry", r"\bglobal\b", r"visual tokens", r"ablation"),
            "paper",
        ),
        Entry(
            6,
            "table6_rra",
            "region-report alignment (RRA) and the training settings that came with it",
            (
                r"\brra\b",
                r"region-report alignment",
                r"region dropout",
                r"organ-name (?:loss )?weight",
                r"name_weight",
                r"ablation",
            ),
            "paper",
        ),
        Entry(
            7,
            "table7_llm_size",
            "LLM size",
            (r"llm size", r"size of the llm", r"larger llm", r"\bllm_", r"smollm2", r"ablation"),
            "paper",
        ),
        Entry(
            8,
            "table8_grounded_findings",
            "grounded finding accuracy",
            (r"grounded", r"attribute accuracy", r"invent"),
            "kit",
        ),
        Entry(
            9,
            "table9_ce_per_label",
            "clinical efficacy of `full` per label",
            (r"per[- ]label", r"\bprobe"),
            "kit",
        ),
    )
}

#: The paper's Figs. 2-4 as the kit draws them (`paper_fig<N>_*`, `report.figures`) and the kit's own figures
#: (`kit_fig<N>_*`, "Kit Fig. N" in prose; 1-3 drawn by `data.views` in notebook 01, 4-6 by
#: `report.kit_figures`). figures/README.md: the rule.
FIGURES: dict[str, Entry] = {e.stem: e for e in (
    Entry(2, "paper_fig2_report_length", "report-length distributions",
          (r"report[- ]length", r"words per report", r"lengths?\b"), "paper"),
    Entry(3, "paper_fig3_case_study", "a case study, findings highlighted",
          (r"case study", r"highlight"), "paper"),
    Entry(4, "paper_fig4_region_report", "a region-aligned report on CT slices",
          (r"region-aligned", r"\bslices?\b"), "paper"),
    Entry(1, "kit_fig1_data_regions", "one case's regions on the CT",
          (r"regions on", r"\bmasks?\b"), "kit"),
    Entry(2, "kit_fig2_data_inputs", "what the model sees: global, texture and geometry inputs",
          (r"\binputs?\b", r"what the model sees", r"texture crop", r"geometry mask"), "kit"),
    Entry(3, "kit_fig3_data_statistics", "dataset statistics",
          (r"statistics", r"region sizes", r"label counts"), "kit"),
    Entry(4, "kit_fig4_training_curves", "training loss of each run",
          (r"training (?:loss|curve)", r"\bloss", r"learning rate"), "kit"),
    Entry(5, "kit_fig5_region_accuracy_by_step", "region accuracy against training step",
          (r"region accuracy", r"checkpoint", r"\bsteps?\b"), "kit"),
    Entry(6, "kit_fig6_ablation_bars", "ablation bars with bootstrap 95% CIs",
          (r"ablation", r"\bbars?\b", r"bootstrap", r"\bcis?\b"), "kit"),
)}


def figures_numbered(number: int, kit_only: bool = False) -> list[Entry]:
    """The figure prose means by "Fig. `number`" (the paper's) or by "Kit Fig. `number`" (`kit_only`: the
    kit's)."""
    return [e for e in FIGURES.values() if e.number == number and (e.origin == "kit") == kit_only]
