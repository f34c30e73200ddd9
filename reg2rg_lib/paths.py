"""Where each stage reads and writes: one profile run's output folder, and the file names of every folder the
kit reads or writes (a run, its metrics, a saved model, a checkpoint, a case report, the authors' release).

A later stage reads only what an earlier one wrote here, so any notebook can run on its own once its inputs
exist.

    outputs/<profile>/
      data/benchmark/      the embedded benchmark in the RadGenome-ChestCT layout (`reg2rg synth`)
      data/manifest.json   the dataset manifest
      cache/               preprocessed tensors, one file per case (`reg2rg prepare`)
      tokenizer/           the locally trained tokenizer (CPU presets)
      runs/<name>/         one training run: checkpoints/, train_log.csv, predictions.csv, metrics/
                           (checkpoints/step-N/model/ is a saved model: `ModelFolder`)
      notebooks/           executed notebooks
      summary.json         the main job's summary (headline metrics per run)
      ablation_stats.csv   bootstrap CIs and paired tests of the ablation grid
      baselines.json       the reference-free baselines (`baselines/<name>/` hold their own run files)

One file over 400 lines: it is the kit's table of file names, mostly two-line properties, one per file, so
that each name is written once; the folders name files of each other (`RunFolder.metrics_summary`,
`ReleaseFolder.nlg_results`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

#: The repository root (where `notebooks/` and `figures/` live) when running from a checkout.
REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class RunPaths:
    """Paths inside one profile run's output folder `root`."""

    root: Path

    def __init__(self, root: str | os.PathLike[str]) -> None:
        object.__setattr__(self, "root", Path(root).expanduser().resolve())

    @classmethod
    def of_run(cls, run_dir: str | os.PathLike[str]) -> RunPaths:
        """The profile folder a training run reads its data from: OUT for OUT/runs/<name>, else the run folder
        itself (a run outside a profile folder keeps its data/, cache/ and tokenizer/ inside)."""
        run_dir = Path(run_dir).expanduser().resolve()
        return cls(run_dir.parent.parent if run_dir.parent.name == "runs" else run_dir)

    @classmethod
    def of_checkpoint(cls, path: str | os.PathLike[str]) -> RunPaths | None:
        """The profile folder of the run that holds `path` (OUT/runs/<name>/checkpoints/step-N/model, or any
        folder inside OUT/runs/<name>), found from the nearest such run folder; None outside any `runs/`."""
        path = Path(path).expanduser().resolve()
        run_dir = next((p for p in [path, *path.parents] if p.parent.name == "runs"), None)
        return cls.of_run(run_dir) if run_dir is not None else None

    @property
    def data(self) -> Path:
        return self.root / "data" / "benchmark"

    @property
    def manifest(self) -> Path:
        return self.root / "data" / "manifest.json"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def vision(self) -> Path:
        """`reg2rg pretrain-vision`'s output: RadFM_vit3d.pth (the pretrained ViT3D) and pretrain.json."""
        return self.root / "vision"

    @property
    def vision_checkpoint(self) -> Path:
        return self.vision / "RadFM_vit3d.pth"  # RadFM's file name, so both load through `vision_checkpoint`

    @property
    def tokenizer(self) -> Path:
        return self.root / "tokenizer"

    @property
    def notebooks(self) -> Path:
        return self.root / "notebooks"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def ablation_stats(self) -> Path:
        return self.root / "ablation_stats.csv"

    @property
    def baselines(self) -> Path:
        return self.root / "baselines.json"

    def baseline(self, name: str) -> Path:
        """Folder of the baseline `name`: an untrained run folder (`RunFolder`): predictions and metrics."""
        return self.root / "baselines" / name

    @property
    def runs(self) -> Path:
        """The folder that holds every training run's folder."""
        return self.root / "runs"

    def run(self, name: str) -> Path:
        """Folder of the training run `name` (e.g. `full`, `no_rra`); `RunFolder(...)` names its files."""
        return self.runs / name


@dataclass(frozen=True)
class RunFolder:
    """Files of one training run's folder (`RunPaths.run(name)`, or any folder `reg2rg train` wrote).

        checkpoints/                 training checkpoints (`step-N/`, see below)
        run_config.json              the inputs, settings and model config it was trained with
        train_log.csv                one row per optimizer step; train_summary.json when training finished
        predictions.csv              the test split's reports, with predictions.decoding.json next to it
        metrics/                     `evaluate_predictions` on predictions.csv (`MetricsFolder`)
        predictions<variant>.csv     another decoding or probe (e.g. "_sampled"), scored into
                                     metrics<variant>/
        PROVENANCE.md                how a run imported from outside the grid was made (`imported`)
        shuffled_regions/            the test split with each case's regions in a shuffled order:
                                     predictions.csv and metrics/, as a run folder of its own
    """

    root: Path

    def __init__(self, root: str | os.PathLike[str]) -> None:
        object.__setattr__(self, "root", Path(root).expanduser())

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def run_config(self) -> Path:
        return self.root / "run_config.json"

    @property
    def train_log(self) -> Path:
        return self.root / "train_log.csv"

    @property
    def train_summary(self) -> Path:
        return self.root / "train_summary.json"

    def predictions(self, variant: str = "") -> Path:
        """predictions.csv, or predictions<variant>.csv for another decoding (`variant` "_sampled")."""
        return self.root / f"predictions{variant}.csv"

    def decoding(self, variant: str = "") -> Path:
        """Which decoding wrote `predictions(variant)` (`infer.predictions.decoding_path` of that file)."""
        return self.root / f"predictions{variant}.decoding.json"

    def metrics(self, variant: str = "") -> Path:
        """The metrics folder of `predictions(variant)`."""
        return self.root / f"metrics{variant}"

    def metrics_summary(self, variant: str = "") -> Path:
        """The headline numbers `evaluate_predictions` wrote last into `metrics(variant)`."""
        return MetricsFolder(self.metrics(variant)).summary

    @property
    def provenance(self) -> Path:
        return self.root / "PROVENANCE.md"

    @property
    def shuffled_regions(self) -> Path:
        return self.root / "shuffled_regions"

    @property
    def imported(self) -> tuple[Path, ...]:
        """What a run trained outside the grid commits: its predictions (required) and how they were made."""
        return self.predictions(), self.decoding(), self.run_config, self.train_log, self.provenance


@dataclass(frozen=True)
class MetricsFolder:
    """Files of one metrics folder (`RunFolder.metrics(variant)`, or the DIR of `reg2rg evaluate ... --out
    DIR`), as `metrics.evaluate_predictions` writes them. A file in a format the authors released keeps their
    file name (`ReleaseFolder`).

        summary.json                 the headline numbers, written last
        nlg_evaluation_results.csv   BLEU-1..4, METEOR, ROUGE-L, CIDEr (the released format)
        nlg_per_sample.csv           the same per report; nlg_evaluation.json: every number, full precision
        nlg_by_region.csv            NLG of each region's paragraphs (`by_region`)
        ce_labels.csv                the 18 labels of each reference and prediction (GT_/Pred_ columns)
        ce_metrics.csv               clinical efficacy in the released `metrics_manual.csv` format;
                                     ce_classification_report.txt and ce_metrics.json beside it
        crg.json                     the VLM3D challenge's CRG over the same labels
        region_metrics.json          region recognition; region_classification_report.txt the same as text
        all_regions_<avg>_avg_results.csv   region-level CE, avg macro or micro (the released format)
        region_reports/<region>_reports.csv each region's paired paragraphs (the released format)
        grounded_findings.csv        grounded finding accuracy (embedded benchmark): per inserted finding;
                                     grounded_false_findings.csv, grounded_by_kind.csv, grounded.json
        bertscore.csv                BERTScore per report (a local model); model_metrics.json the means
        image_use.csv                the image-use instrument; image_use.json with how it was computed
        compare.csv                  `reg2rg evaluate compare --out`; compare.json
    """

    root: Path

    def __init__(self, root: str | os.PathLike[str]) -> None:
        object.__setattr__(self, "root", Path(root).expanduser())

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def nlg_results(self) -> Path:
        return self.root / "nlg_evaluation_results.csv"

    @property
    def nlg_per_sample(self) -> Path:
        return self.root / "nlg_per_sample.csv"

    @property
    def nlg_json(self) -> Path:
        return self.root / "nlg_evaluation.json"

    @property
    def nlg_by_region(self) -> Path:
        return self.root / "nlg_by_region.csv"

    @property
    def ce_labels(self) -> Path:
        return self.root / "ce_labels.csv"

    @property
    def ce_csv(self) -> Path:
        return self.root / "ce_metrics.csv"

    @property
    def ce_report(self) -> Path:
        return self.root / "ce_classification_report.txt"

    @property
    def ce_json(self) -> Path:
        return self.root / "ce_metrics.json"

    @property
    def crg(self) -> Path:
        return self.root / "crg.json"

    @property
    def region_json(self) -> Path:
        return self.root / "region_metrics.json"

    @property
    def region_report(self) -> Path:
        return self.root / "region_classification_report.txt"

    def region_ce(self, avg: str) -> Path:
        """Region-level CE averaged `avg` ("macro" or "micro") over the labels of each region."""
        return self.root / region_ce_name(avg)

    @property
    def region_reports(self) -> Path:
        """The folder of `<region>_reports.csv` files (`region_reports_file`)."""
        return self.root / "region_reports"

    @property
    def grounded_findings(self) -> Path:
        return self.root / "grounded_findings.csv"

    @property
    def grounded_false(self) -> Path:
        return self.root / "grounded_false_findings.csv"

    @property
    def grounded_by_kind(self) -> Path:
        return self.root / "grounded_by_kind.csv"

    @property
    def grounded_json(self) -> Path:
        return self.root / "grounded.json"

    @property
    def bertscore(self) -> Path:
        return self.root / "bertscore.csv"

    @property
    def model_metrics(self) -> Path:
        return self.root / "model_metrics.json"

    @property
    def image_use_csv(self) -> Path:
        return self.root / "image_use.csv"

    @property
    def image_use_json(self) -> Path:
        return self.root / "image_use.json"

    @property
    def compare_csv(self) -> Path:
        return self.root / "compare.csv"

    @property
    def compare_json(self) -> Path:
        return self.root / "compare.json"


def region_ce_name(avg: str) -> str:
    """`all_regions_<avg>_avg_results.csv`: the released name of region-level CE averaged `avg`."""
    return f"all_regions_{avg}_avg_results.csv"


def region_reports_file(folder: str | os.PathLike[str], region: str) -> Path:
    """`folder/<region>_reports.csv`: one region's paired paragraphs, in the released format (a release
    folder holds them directly, a metrics folder under `region_reports/`)."""
    return Path(folder) / f"{region}_reports.csv"


@dataclass(frozen=True)
class ReleaseFolder:
    """Files of the authors' released CTRG outputs (their `results/Reg2RG_ctrg/`; `report.release` finds it),
    as Tables 1-3 read them.

        ctrg_combined_reports.csv                  the predictions (GT_combined_report, Pred_combined_report)
        ctrg_combined_reports_rm_region_text.csv   the same without the "The region i is" scaffolding
        nlg_evaluation_results.csv                 their NLG metrics (`MetricsFolder.nlg_results`' format)
        metrics_manual.csv                         their CE metrics (the format of `MetricsFolder.ce_csv`);
                                                   test_classification_report.txt the same as text
        label_inferred.csv                         the RadBERT labels (`MetricsFolder.ce_labels`' format)
        region_classification_report.txt          region recognition (from an unreleased prediction file)
        all_regions_<avg>_avg_results.csv          region-level CE (`region_ce_name`)
    """

    root: Path

    def __init__(self, root: str | os.PathLike[str]) -> None:
        object.__setattr__(self, "root", Path(root).expanduser())

    @property
    def predictions(self) -> Path:
        return self.root / "ctrg_combined_reports.csv"

    @property
    def predictions_without_regions(self) -> Path:
        return self.root / "ctrg_combined_reports_rm_region_text.csv"

    @property
    def nlg_results(self) -> Path:
        return MetricsFolder(self.root).nlg_results

    @property
    def ce_manual(self) -> Path:
        return self.root / "metrics_manual.csv"

    @property
    def ce_report(self) -> Path:
        return self.root / "test_classification_report.txt"

    @property
    def labels(self) -> Path:
        return self.root / "label_inferred.csv"

    @property
    def region_report(self) -> Path:
        return MetricsFolder(self.root).region_report

    def region_ce(self, avg: str) -> Path:
        return self.root / region_ce_name(avg)


@dataclass(frozen=True)
class ReportFolder:
    """Files of one case's report folder (`reg2rg report --out OUT`, `report.case_report.write_case_report`).

        report.json                  the report as data; report.md and report.png the same for a reader
        predictions.csv              the report in the released predictions format (one row)
        report_inputs.json           the CT and mask paths and the decoding (the explorer opens the folder)
    """

    root: Path

    def __init__(self, root: str | os.PathLike[str]) -> None:
        object.__setattr__(self, "root", Path(root).expanduser())

    @property
    def json(self) -> Path:
        return self.root / "report.json"

    @property
    def markdown(self) -> Path:
        return self.root / "report.md"

    @property
    def png(self) -> Path:
        return self.root / "report.png"

    @property
    def predictions(self) -> Path:
        return self.root / "predictions.csv"

    @property
    def inputs(self) -> Path:
        return self.root / "report_inputs.json"


@dataclass(frozen=True)
class ModelFolder:
    """Files of one saved Reg2RG model (`Reg2RG.save_pretrained`; a run's `checkpoints/step-N/model/`).

        config.json                  the model config (Reg2RGConfig)
        tokenizer/                   the HF tokenizer with the Reg2RG tokens
        embedding_layer/             the visual side: config.json + model.safetensors
        llm/                         the LLM as a transformers folder (for LoRA: the base it adapts), when it
                                     cannot be re-read from `llm_path`
        llm_adapter/                 the LoRA as a peft adapter (adapter_config.json +
                                     adapter_model.safetensors)
        model.safetensors            folders written before the peft/transformers layout: every saved tensor
        reference_inputs.safetensors each organ's average inputs over the train cases, for image-contrastive
                                     decoding (`samples.reference`; written when the profile decodes with it)
    """

    root: Path

    def __init__(self, root: str | os.PathLike[str]) -> None:
        object.__setattr__(self, "root", Path(root).expanduser())

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def tokenizer(self) -> Path:
        return self.root / "tokenizer"

    @property
    def embedding(self) -> Path:
        return self.root / "embedding_layer"

    @property
    def llm(self) -> Path:
        return self.root / "llm"

    @property
    def adapter(self) -> Path:
        return self.root / "llm_adapter"

    @property
    def legacy_weights(self) -> Path:
        return self.root / "model.safetensors"

    @property
    def reference(self) -> Path:
        return self.root / "reference_inputs.safetensors"


#: What a `ModelFolder`'s embedding_layer/ holds (transformers' own file names).
EMBEDDING_CONFIG, EMBEDDING_WEIGHTS = "config.json", "model.safetensors"


# ---- training checkpoints: `RUN/checkpoints/step-00000100/`, complete once its COMPLETE marker is written --
#: The marker a checkpoint folder gets last (train/checkpoints.py writes it); a folder without it is never
#: loaded.
COMPLETE = "COMPLETE"
_STEP_DIR = re.compile(r"^step-(\d{8})$")


def step_dir_name(step: int) -> str:
    """The folder name of the checkpoint after `step` optimizer steps."""
    return f"step-{step:08d}"


def list_checkpoints(ckpt_root: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under `ckpt_root` as (step, folder), oldest first."""
    if not ckpt_root.is_dir():
        return []
    found = []
    for child in ckpt_root.iterdir():
        m = _STEP_DIR.match(child.name)
        if m and child.is_dir() and (child / COMPLETE).is_file():
            found.append((int(m.group(1)), child))
    return sorted(found)


def latest_checkpoint(ckpt_root: Path) -> Path | None:
    """The newest complete checkpoint folder, or None."""
    found = list_checkpoints(ckpt_root)
    return found[-1][1] if found else None


def default_out_dir(profile: str) -> Path:
    """`outputs/<profile>` under the repository root."""
    return REPO_ROOT / "outputs" / profile
