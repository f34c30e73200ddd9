"""A torch Dataset over the prep cache: one item per case = tokenised prompt + RRA target + visual inputs.

Region-report alignment (RRA): in training, each case's regions are put into the prompt in a random order and
the target names each region's organ ("The region 2 is heart: ..."), so the model has to recognise the organ
from the region's features instead of from its position. The order is drawn from
`random.Random(f"{seed}:{epoch}:{case}")`, a pure function of the seed, the epoch and the case: a resumed run
sees exactly the orders the interrupted one would have seen, whatever the data-loader workers do. At test time
(`shuffle_regions=False`) regions keep the canonical order. The per-region tensors are permuted with the
sample's `order`, so region i of the prompt gets region i's features.

Visual inputs come either from the frozen-ViT feature cache (`features.FeatureCache`: `global_feats`,
`region_feats`, the default when the ViT is frozen) or as raw images (`global_images`, `region_images`). The
binary region masks always go in as images, since the geometry encoder trains; they are kept in memory as
bool.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from reg2rg_lib.errors import KitError
from reg2rg_lib.model import add_reg2rg_tokens, build_sample
from reg2rg_lib.model.prompt import HEAD_RE
from reg2rg_lib.model.reg2rg import BRANCH_GEOMETRY, BRANCH_KEEP, BRANCH_TEXTURE
from reg2rg_lib.regions import LABEL_REGIONS, LABELS, REGIONS
from reg2rg_lib.samples.vision_inputs import vision_inputs, vision_keys

#: "The region i is <organ>:" in a target; group 1 is the organ name.
FEW_REGIONS = 3  # a few-region sample (`region_few`) keeps 1 to this many regions

_NAME_RE = re.compile(r"The region \d+ is (" + "|".join(re.escape(r) for r in REGIONS) + r"):")


class ReportDataset(torch.utils.data.Dataset):
    """Items for `Collator`: {"name", "sample" (model.Sample), visual tensors permuted to prompt order}.

    `cache` is the prep cache (`load_cache(dir)`), `split` "train" | "test". `features` (a built FeatureCache)
    replaces the raw images by cached ViT features. `with_targets=False` builds prompts only (generation);
    `load_tensors=False` gives text-only items (for looking at prompts and targets).
    """

    def __init__(
        self,
        cache: Any,
        split: str,
        tokenizer: Any,
        cfg: Any,
        *,
        features: Any = None,
        shuffle_regions: bool = True,
        with_targets: bool = True,
        seed: int = 0,
        names: Sequence[str] | None = None,
        load_tensors: bool = True,
        region_dropout: float = 0.0,
        region_dropout_max: int = 3,
        region_few: float = 0.0,
        branch_dropout: float = 0.0,
        geometry_dropout: float = 0.0,
        region_labels: bool = False,
    ) -> None:
        records = cache.cases(split)
        if names is not None:
            wanted = set(names)
            records = [r for r in records if r.name in wanted]
        if not records:
            raise KitError(
                f"{getattr(cache, 'root', 'prep cache')}: no {split!r} cases to build a dataset from"
            )
        self.records = records
        self.cache, self.tokenizer, self.cfg, self.features = cache, tokenizer, cfg, features
        self.shuffle = shuffle_regions and cfg.rra
        if not 0.0 <= region_dropout < 1.0:
            raise KitError(f"region_dropout must be in [0, 1), got {region_dropout}")
        # region dropout is a training setting of its own, not part of RRA: a no-RRA run keeps it (its prompt
        # stays in canonical order), so the `no_rra` ablation differs from `full` in alignment only
        self.region_dropout = region_dropout if shuffle_regions else 0.0
        if region_dropout_max < 1:
            raise KitError(f"region_dropout_max must be >= 1, got {region_dropout_max}")
        self.region_dropout_max = region_dropout_max
        if not 0.0 <= region_few < 1.0:
            raise KitError(f"region_few must be in [0, 1), got {region_few}")
        self.region_few = region_few if shuffle_regions else 0.0
        if not 0.0 <= branch_dropout < 0.5:
            raise KitError(f"branch_dropout must be in [0, 0.5), got {branch_dropout}")
        self.branch_dropout = branch_dropout if shuffle_regions else 0.0  # training samples only
        if geometry_dropout < 0.0 or 2 * branch_dropout + geometry_dropout >= 1.0:
            raise KitError(f"geometry_dropout must be >= 0 and 2 x branch_dropout + geometry_dropout < 1, "
                           f"got {geometry_dropout} with branch_dropout {branch_dropout}")
        self.geometry_dropout = geometry_dropout if shuffle_regions else 0.0
        self.region_labels = region_labels  # items carry `region_label_targets` (train.label_weight)
        self.with_targets, self.seed, self.epoch = with_targets, seed, 0
        self._images: dict[str, dict[str, torch.Tensor]] = {r.name: {} for r in records}
        # read each case once: masks as bool, raw images only without the feature cache
        for rec in records if load_tensors else ():
            try:
                images = features is None  # with a feature cache only the masks are read
                vis = vision_inputs(cache.load(rec.name, keys=vision_keys(cfg, images)), cfg, images)
            except KitError:
                raise
            except Exception as err:
                raise KitError(f"case {rec.name}: cannot read its prep-cache tensors ({type(err).__name__}: "
                               f"{err}); rerun `reg2rg prepare`") from err
            keep: dict[str, torch.Tensor] = {}
            if vis.get("region_masks") is not None:
                # (R, 1, H, W, D): coverage in [0, 1] (half precision: exact in eighths),
                masks = vis["region_masks"]
                keep["region_masks"] = masks.half() if cfg.mask_coverage else masks.bool()  # or binarised
            if features is None:
                for key in ("global_images", "region_images"):
                    if vis.get(key) is not None:
                        keep[key] = vis[key]
            n_regions = len(rec.regions)
            for key, value in keep.items():
                if key != "global_images" and value.shape[0] != n_regions:
                    raise KitError(f"case {rec.name}: {key} has {value.shape[0]} regions, the manifest lists "
                                   f"{n_regions}; rerun `reg2rg prepare`")
            self._images[rec.name] = keep

    def set_epoch(self, epoch: int) -> None:
        """Called by the training loop before each epoch: a new RRA region order per epoch."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.records]

    def region_rng(self, name: str) -> random.Random | None:
        wanted = self.shuffle or self.region_dropout > 0.0 or self.region_few > 0.0
        return random.Random(f"{self.seed}:{self.epoch}:{name}") if wanted else None

    def kept_regions(self, n: int, rng: random.Random | None) -> list[int]:
        """Canonical indices of the regions a sample keeps (training only; prompt, visual tokens and target
        paragraphs alike, at least one kept).

        - few-region samples: with probability `region_few` a sample keeps only 1 to `FEW_REGIONS` of its
          regions (uniformly), as a user's segmentation with a few masks (a lung + bone CT) does;
        - region dropout: otherwise, with probability `region_dropout` it loses 1 to `region_dropout_max`
          regions, uniformly.

        Prompt lengths then vary, so the model cannot find region i's tokens by where they sit in the usual
        10-region prompt and has to match the digit i. With `region_few` 0 the random draws are the same as
        without the option, so runs trained before it are unchanged."""
        keep = list(range(n))
        if rng is None or n < 2:
            return keep
        if self.region_few > 0.0 and rng.random() < self.region_few:
            return sorted(rng.sample(keep, rng.randint(1, min(FEW_REGIONS, n - 1))))
        if self.region_dropout <= 0.0 or rng.random() >= self.region_dropout:
            return keep
        drop = set(rng.sample(keep, rng.randint(1, min(self.region_dropout_max, n - 1))))
        return [i for i in keep if i not in drop]

    def branch_drop(self, name: str, n: int) -> torch.Tensor | None:
        """Branch dropout (training only; None when off): for the n regions of a sample in prompt order, which
        branch the model sees zeroed (`BRANCH_KEEP`; `BRANCH_TEXTURE`: its texture tokens; `BRANCH_GEOMETRY`:
        its geometry token; each with probability `branch_dropout`, never both; the geometry token with
        `geometry_dropout` more). A look-up the LLM formed from one branch then fails on some samples, so the
        other branch's is trained too. Its own random stream, one draw per region: the regions kept, their
        order and the target are the same as without it."""
        if self.branch_dropout <= 0.0 and self.geometry_dropout <= 0.0:
            return None
        rng = random.Random(f"{self.seed}:{self.epoch}:{name}:branch")
        codes = []
        for _ in range(n):
            u = rng.random()
            codes.append(BRANCH_TEXTURE if u < self.branch_dropout
                         else BRANCH_GEOMETRY if u < 2 * self.branch_dropout + self.geometry_dropout
                         else BRANCH_KEEP)
        return torch.as_tensor(codes, dtype=torch.long)

    def case_tensors(self, index: int) -> tuple[list[str], dict[str, torch.Tensor]]:
        """Case `index`'s regions and visual tensors in the canonical order (no prompt, no dropout): what
        `samples.reference.reference_inputs` averages."""
        rec = self.records[index]
        tensors = dict(self._images[rec.name])
        if self.features is not None:
            tensors.update(self.features.get(rec.name))
        return list(rec.regions), tensors

    def __getitem__(self, index: int) -> dict[str, Any]:
        rec = self.records[index]
        rng = self.region_rng(rec.name)
        keep = self.kept_regions(len(rec.regions), rng)
        regions = [rec.regions[i] for i in keep]
        reports = {r: rec.reports[r] for r in regions if r in rec.reports} if self.with_targets else None
        try:
            sample = build_sample(regions, reports, self.tokenizer, self.cfg, rng=rng)
        except Exception as err:
            raise KitError(f"case {rec.name}: cannot build its prompt/target ({type(err).__name__}: {err})") \
                from err
        # rows of the case's tensors
        order = torch.as_tensor([keep[i] for i in sample.order], dtype=torch.long)
        item: dict[str, Any] = {
            "name": rec.name,
            "sample": sample,
            "name_positions": name_positions(sample, self.tokenizer) if self.with_targets else [],
        }
        tensors = dict(self._images[rec.name])
        if self.features is not None:
            tensors.update(self.features.get(rec.name))
        for key, value in tensors.items():
            if not key.startswith("global") and value.shape[0] != len(rec.regions):
                raise KitError(
                    f"case {rec.name}: {key} has {value.shape[0]} regions, the manifest lists "
                    f"{len(rec.regions)}; the prep or feature cache is stale (rerun `reg2rg prepare`)"
                )
        for key, value in tensors.items():
            # global tensors have one row per case; region tensors one per region, put into prompt order
            item[key] = value if key.startswith("global") else value[order]  # (R, ...) -> (R, ...) permuted
        drop = self.branch_drop(rec.name, len(order))
        if drop is not None:
            item["region_drop"] = drop
        if self.region_labels and self.with_targets:
            item.update(region_label_targets(rec.labels, sample, self.tokenizer))
        return item


def name_positions(sample: Any, tokenizer: Any) -> list[int]:
    """Positions in `sample.input_ids` of the organ-name tokens of the RRA target ("The region i is
    <organ>:"), where the model shows whether it recognised the region (the loss can weigh them up:
    `region_name_weight`)."""
    if not sample.target:
        return []
    return target_token_positions(sample, tokenizer, [m.span(1) for m in _NAME_RE.finditer(sample.target)])


def paragraph_starts(sample: Any, tokenizer: Any) -> dict[int, int]:
    """Prompt region i -> the position in `sample.input_ids` whose output predicts the first word of
    region i's paragraph (after "The region i is <organ>:" and, with re-reference, after its inserted
    tokens); regions whose paragraph the target's length cut are left out."""
    if not sample.target:
        return {}
    enc = tokenizer(sample.target, add_special_tokens=False, return_offsets_mapping=True)
    offsets = enc["offset_mapping"]
    where = sample.target_positions or [sample.n_prompt + t for t in range(len(offsets))]
    out = {}
    for m in HEAD_RE.finditer(sample.target):
        t = next((k for k, (start, end) in enumerate(offsets)  # the first word (a lone space: not yet)
                  if end > m.end() and sample.target[max(start, m.end()):end].strip()), None)
        if t is not None and t < len(where) and where[t] < len(sample.input_ids):
            out[int(m.group(1))] = where[t] - 1
    return out


def region_label_targets(labels: Mapping[str, int], sample: Any, tokenizer: Any) -> dict[str, torch.Tensor]:
    """`train.label_weight`'s targets for one sample, its regions in prompt order: `label_positions` (R,) as
    `paragraph_starts` gives them (-1: the paragraph was cut), `label_targets` (R, 18) the case's labels,
    `label_mask` (R, 18) the labels region i's paragraph reports (`regions.LABEL_REGIONS`; none when the case
    has no label table)."""
    starts = paragraph_starts(sample, tokenizer)
    targets, mask = label_rows(labels, sample.regions)
    return {"label_positions": torch.tensor([starts.get(i, -1) for i in range(len(sample.regions))],
                                            dtype=torch.long),
            "label_targets": targets, "label_mask": mask}


def label_rows(labels: Mapping[str, int], regions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(R, 18) targets (the case's labels on every row) and (R, 18) mask (the labels each region reports;
    none when the case has no label table) of `regions` in their order."""
    n = len(regions)
    values = torch.tensor([float(labels.get(label, 0)) for label in LABELS])
    mask = torch.tensor([[LABEL_REGIONS[label] == region for label in LABELS] for region in regions],
                        dtype=torch.bool).reshape(n, len(LABELS))
    return values.expand(n, -1).clone(), mask & bool(labels)


def target_token_positions(sample: Any, tokenizer: Any, spans: list[tuple[int, int]]) -> list[int]:
    """Positions in `sample.input_ids` of the target tokens that overlap any character span of `sample.target`
    (through `Sample.target_positions`, so tokens re-reference inserted are skipped)."""
    if not spans:
        return []
    enc = tokenizer(sample.target, add_special_tokens=False, return_offsets_mapping=True)
    where = sample.target_positions or [sample.n_prompt + t for t in range(len(enc["offset_mapping"]))]
    out = [where[t] for t, (a, b) in enumerate(enc["offset_mapping"])
           if t < len(where) and any(a < end and b > start for start, end in spans)]
    return [p for p in out if p < len(sample.input_ids)]


def rra_preview(cache: Any, tokenizer: Any, cfg: Any, name: str | None = None, epochs: int = 3,
                seed: int = 0) -> list[dict[str, Any]]:
    """What region shuffling does to one training case over `epochs` epochs (notebook 03): per epoch, the
    prompt order of the regions and the start of the target the model is trained to write."""
    add_reg2rg_tokens(tokenizer, cfg)
    records = cache.cases("train")
    rec = next((r for r in records if r.name == name), records[0]) if name else records[0]
    ds = ReportDataset(cache, "train", tokenizer, cfg, seed=seed, names=[rec.name], load_tensors=False)
    rows = []
    for epoch in range(epochs):
        ds.set_epoch(epoch)
        sample = ds[0]["sample"]
        rows.append({"case": rec.name, "epoch": epoch, "prompt order": ", ".join(sample.regions),
                     "target starts": sample.target[:90] + "..."})
    return rows
