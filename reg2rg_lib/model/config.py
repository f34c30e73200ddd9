"""`Reg2RGConfig`: every size and switch of the model in one dataclass, with named presets and LLM shapes.

Presets (`Reg2RGConfig.preset(name, image_size=...)`):
- `cpu-tiny`: trains on 2 CPU cores in minutes (LLM `scratch-2x128`: a 2-layer, 128-wide LLaMA-architecture
  LLM built from scratch; a 2-layer ViT, 8 Perceiver latents). The demo swaps its LLM for `scratch-2x64`.
- `cpu-small`: an intermediate size (LLM `scratch-4x256`, 16 latents), still CPU-friendly.
- `paper`: the published configuration (RadFM ViT3D 768x12, Perceiver 768x6 with 32 latents, 3-layer 255-wide
  geometry ViT, LLaMA-2-7B with LoRA r=8 on q_proj/v_proj). Constructible on the meta device.

Names say what they are: LLM architectures are `scratch-<layers>x<width>` (random init, trained from scratch)
or the published model's name (`llama2-7b`); the names used before 2026-12-03 (presets `tiny`/`small`, LLMs
`micro`/`tiny`/`small`) are still accepted (`PRESET_ALIASES`, `LLM_ARCH_ALIASES`), so older profiles, saved
configs and run names keep working.

The image size always comes from the profile (`profile.data.image_size`), never from the preset: a preset only
fixes patch sizes, and `validate()` checks that they divide the image size.

One file over 400 lines: one dataclass of some fifty commented fields; the presets, LLM architectures and
instructions around it are values of those fields.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reg2rg_lib.errors import BadInputError, KitError
from reg2rg_lib.io import write_json_atomic
from reg2rg_lib.paths import RunPaths, default_out_dir
from reg2rg_lib.profiles import Profile

#: The instruction the paper's model was trained with (the `Question` column of the released CTRG
#: predictions).
PAPER_INSTRUCTION = (
    "Given the provided global and regional information from this CT scan, please generate a comprehensive "
    "medical report for each region. First, identify the anatomical area corresponding to each region, then "
    "provide detailed information about these anatomical structures and any abnormalities that are "
    "essential. You can refer to the global information as the context and take it as a supplement when "
    "generating each region report. For those reports that have no specific region associated with them, "
    "generate an 'other report' at the end."
)
#: A short instruction for the CPU presets: the paper's wording costs ~90 tokens of a tiny model's context.
SHORT_INSTRUCTION = "Identify each region and write its report."

#: LLM architectures by name (LLaMA family). `llama2-7b` is Llama-2-7b-chat-hf's shape (32000-token
#: vocabulary). `scratch-<layers>x<width>`: randomly initialised and trained from scratch (the CPU profiles).
LLM_ARCHS: dict[str, dict[str, Any]] = {
    "scratch-2x64": dict(llm_hidden=64, llm_layers=2, llm_heads=2, llm_kv_heads=2, llm_intermediate=192),
    "scratch-2x128": dict(llm_hidden=128, llm_layers=2, llm_heads=4, llm_kv_heads=4, llm_intermediate=384),
    "scratch-4x256": dict(llm_hidden=256, llm_layers=4, llm_heads=8, llm_kv_heads=8, llm_intermediate=768),
    "llama2-7b": dict(llm_hidden=4096, llm_layers=32, llm_heads=32, llm_kv_heads=32, llm_intermediate=11008,
                      llm_vocab=32000, llm_max_positions=4096),
}
#: The LLM names used before 2026-12-03 ("micro" was smaller than the "tiny" preset's "tiny" LLM): still
#: accepted.
LLM_ARCH_ALIASES: dict[str, str] = {
    "micro": "scratch-2x64",
    "tiny": "scratch-2x128",
    "small": "scratch-4x256",
}


def llm_arch_name(name: str) -> str:
    """The current name of LLM architecture `name` (an old alias or a key of LLM_ARCHS); a KitError
    otherwise."""
    arch = LLM_ARCH_ALIASES.get(name, name)
    if arch not in LLM_ARCHS:
        raise KitError(f"unknown LLM architecture {name!r}; expected one of {', '.join(LLM_ARCHS)}")
    return arch

#: Pretrained LLMs by the symbolic `llm_path` a profile may give (`env.assets.LLM_ASSETS` resolves the
#: folder): the config fields that name the model and its real shape, and LoRA as the paper (r, alpha,
#: dropout, q/v from the defaults below), set by `Reg2RGConfig.preset` unless the caller overrides them.
PRETRAINED_LLMS: dict[str, dict[str, Any]] = {
    "smollm2": dict(llm_name="smollm2-135m", llm_hidden=576, llm_layers=30, llm_heads=9, llm_kv_heads=3,
                    llm_intermediate=1536, llm_vocab=49152, llm_max_positions=8192, llm_finetune="lora"),
}

Size3 = tuple[int, int, int]


def vision_checkpoint_path(value: str | None, profile: Profile, paths: RunPaths | None = None) -> str | None:
    """A `vision_checkpoint` value as a path: "pretrained" names `reg2rg pretrain-vision`'s output in the
    profile folder `paths` (default: outputs/<profile>), OUT/vision/RadFM_vit3d.pth; anything else is kept."""
    if value != "pretrained":
        return value
    return str((paths or RunPaths(default_out_dir(profile.name))).vision_checkpoint)


@dataclass
class Reg2RGConfig:
    """Sizes and switches of Reg2RG. Tuples are (H, W, D) like the profile's `image_size`."""

    # ---- input ---------------------------------------------------------------------------------------------
    image_size: Size3 = (256, 256, 64)  # model input (global image, texture crops, masks); from the profile
    in_channels: int = 3  # the ViT's channels; the 1-channel CT is repeated (RadFM's ViT takes 3)
    max_regions: int = 10  # placeholder tokens are allocated for this many regions per prompt

    # ---- vision encoder: RadFM's ViT3D, frozen by default --------------------------------------------------
    vit_patch: Size3 = (32, 32, 4)
    vit_dim: int = 768  # must divide by 3: one learned position table per axis, dim/3 wide each
    vit_depth: int = 12
    vit_heads: int = 8
    vit_dim_head: int = 64
    vit_mlp: int = 2048
    # rows of the per-axis position tables; RadFM built its ViT for 512x512x512, so (16, 16, 128), and samples
    # every (rows // grid)-th row for a smaller grid. None = exactly the grid of `image_size`.
    vit_pos_rows: Size3 | None = (16, 16, 128)
    # the LayerNorm over each patch's raw values (RadFM's); False: an identity there, for a random frozen ViT,
    # which cannot learn around the patch mean and scale that LayerNorm removes (vit3d.py)
    vit_patch_norm: bool = True
    # the frozen ViT's output standardised per dimension before the Perceiver, with the mean and standard
    # deviation of the train split's features (one fixed affine map for every organ, global and region
    # features each their own; `Reg2RGEmbedding.set_feature_statistics`). A random frozen ViT's features are
    # nearly the same vector for every case of an organ, and the Perceiver then passes on no case-to-case
    # difference the LLM can read (benchmarks/RESULTS.md, "The lung alone"). Not in the paper
    vision_standardize: bool = False
    freeze_vision: bool = True  # the paper freezes the ViT; its outputs can then be cached
    vision_checkpoint: str | None = None  # RadFM_vit3d.pth; None = random init (CPU presets)

    # ---- Perceiver resampler, shared by the global image and every region ----------------------------------
    perceiver_depth: int = 6
    perceiver_heads: int = 8
    perceiver_dim_head: int = 64
    perceiver_latents: int = 32  # visual tokens per image (global or one region's texture)
    perceiver_ff_mult: int = 4
    perceiver_checkpoint: str | None = None  # RadFM_perceiver_fc.pth (its 'perceiver' entry)

    # ---- geometry (mask) encoder: a light 3D ViT over the binary region mask, mean-pooled ------------------
    mask_patch: Size3 = (32, 32, 16)
    mask_dim: int = 255  # must divide by 3 (per-axis position tables)
    mask_depth: int = 3
    mask_heads: int = 8
    mask_dim_head: int = 64
    mask_mlp: int = 512
    mask_pos_rows: Size3 | None = None  # None = the grid of `image_size` (the paper: 8x8x4 on 256x256x64)

    # ---- LLM (LLaMA architecture when built from the fields below; any HF causal LM through `llm_path`) ----
    llm_name: str = "llama2-7b"  # a key of LLM_ARCHS or a free label
    # HF name or local folder (AutoModelForCausalLM); None = build from the fields
    llm_path: str | None = None
    llm_hidden: int = 4096
    llm_layers: int = 32
    llm_heads: int = 32
    llm_kv_heads: int = 32
    llm_intermediate: int = 11008
    llm_vocab: int = 32000  # base vocabulary (before the Reg2RG tokens); the tokenizer's size wins when known
    llm_max_positions: int = 4096
    # "lora" (paper) | "full" (random-init CPU LLMs: nothing to preserve) | "frozen"
    llm_finetune: str = "lora"
    lora_r: int = 8
    lora_alpha: int = 32
    lora_dropout: float = 0.1
    lora_targets: tuple[str, ...] = ("q_proj", "v_proj")
    gradient_checkpointing: bool = False  # recompute LLM activations in backward (GPU memory for time)

    # ---- prompt (templates are config: the paper's wording by default) -------------------------------------
    global_template: str = "The global information is provided as the context: {tokens}."
    region_template: str = "The region {i} is {tokens}."
    target_template: str = "The region {i} is {region}: {report}"  # one region's paragraph in an RRA target
    instruction: str = PAPER_INSTRUCTION

    # ---- ablation switches ---------------------------------------------------------------------------------
    use_texture: bool = True  # region texture tokens (cropped, masked CT -> ViT -> Perceiver)
    use_geometry: bool = True  # one geometry token per region (mask -> geometry ViT)
    use_global: bool = True  # 32 global tokens of the whole CT
    # LFD. False: the region's masked UNcropped CT through ViT+Perceiver, no geometry token
    decoupled: bool = True
    rra: bool = True  # region-report alignment. False: target = paragraphs in canonical order, no prefixes
    # re-reference (a departure from the paper's prompt, off in the paper preset): right after each "The
    # region i is <organ>:" of an RRA target, region i's own placeholders are inserted again (loss-masked), so
    # the tokens a paragraph is written from sit next to it; the decoder inserts them when it has written the
    # head. Without RRA there are no heads, so it has no effect
    rereference: bool = False
    # with `rereference`: region i's placeholders also after each sentence of its paragraph (after every
    # token that ends in "."), so each finding-or-stop decision sits next to the tokens it is read from; the
    # decoder inserts them when it has written such a token inside region i's paragraph
    rereference_sentences: bool = False
    # a linear head on the LLM's last hidden state where region i's paragraph begins, predicting the region's
    # CT-RATE labels (`regions.LABEL_REGIONS`) as an auxiliary training loss (`train.label_weight`; not the
    # paper's); unused in generation
    label_head: bool = False
    # the geometry encoder's input: False, the region mask binarised (any coverage -> 1); True, the prep
    # cache's area-resized coverage (fractions at the boundary, so a region's volume is read to within a
    # voxel's part)
    mask_coverage: bool = False

    seed: int = 0  # initialisation seed of the randomly initialised parts
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes carried into config.json

    # --------------------------------------------------------------------------------------------------------
    def __post_init__(self) -> None:
        # JSON round trips give lists; keep tuples so that configs compare equal
        for name in (
            "image_size",
            "vit_patch",
            "vit_pos_rows",
            "mask_patch",
            "mask_pos_rows",
            "lora_targets",
        ):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, tuple(value))

    @classmethod
    def preset(cls, name: str, image_size: Size3 | list[int] | None = None, **overrides: Any) -> Reg2RGConfig:
        """The named preset (`cpu-tiny`, `cpu-small`, `paper`; or an old alias) at `image_size`, with field
        `overrides`; validated.

        An `llm_path` of `PRETRAINED_LLMS` (`"smollm2"`) also sets that LLM's shape and LoRA fine-tuning."""
        name = PRESET_ALIASES.get(name, name)
        if name not in PRESETS:
            raise KitError(f"unknown model preset {name!r}; expected one of {', '.join(PRESETS)}")
        fields = dict(PRESETS[name])
        if image_size is not None:
            fields["image_size"] = tuple(image_size)
        fields.update(overrides)
        named = PRETRAINED_LLMS.get(str(fields.get("llm_path")), {})  # e.g. llm_path="smollm2"
        fields.update({k: v for k, v in named.items() if k not in overrides})
        cfg = cls(**fields)
        cfg.extra.setdefault("preset", name)
        return cfg.validate()

    @classmethod
    def from_profile(
        cls,
        profile: Profile,
        changes: Mapping[str, Any] | None = None,
        paths: RunPaths | None = None,
        *,
        llm_arch: str | None = None,
    ) -> Reg2RGConfig:
        """The profile's model config (preset at the profile's image size, LLM `model.llm_arch` when set),
        with ablation `changes` and an LLM arch (`llm_arch` argument first). A pretrained vision checkpoint of
        the profile folder `paths` (default: outputs/<profile>) is named by path; `changes` may set it back to
        None."""
        overrides: dict[str, Any] = {"llm_path": profile.model.llm_path} if profile.model.llm_path else {}
        for switch in ("rereference", "rereference_sentences", "mask_coverage"):  # off in the presets
            if getattr(profile.model, switch):
                overrides[switch] = True
        if not profile.model.vision_patch_norm:  # on in the presets; a profile turns it off
            overrides["vit_patch_norm"] = False
        if profile.model.vision_standardize:  # off in the presets; a profile turns it on
            overrides["vision_standardize"] = True
        if profile.train.label_weight > 0:  # the head that `train.label_weight` trains is part of the model
            overrides["label_head"] = True
        if profile.model.vision_checkpoint:
            overrides["vision_checkpoint"] = vision_checkpoint_path(
                profile.model.vision_checkpoint, profile, paths
            )
        changes = dict(changes or {})
        if "vision_checkpoint" in changes:  # an ablation that turns the pretrained ViT on (or off)
            changes["vision_checkpoint"] = vision_checkpoint_path(
                changes["vision_checkpoint"], profile, paths
            )
        cfg = cls.preset(profile.model.preset, image_size=profile.data.image_size, **overrides)
        llm_arch = llm_arch or profile.model.llm_arch  # the profile may swap the preset's LLM size
        if llm_arch:
            cfg = cfg.with_llm(llm_arch)
        return cfg.replace(**changes) if changes else cfg

    def replace(self, **changes: Any) -> Reg2RGConfig:
        """A validated copy with `changes` (e.g. an ablation: `cfg.replace(rra=False)`)."""
        return dataclasses.replace(self, **changes).validate()

    def with_llm(self, arch: str) -> Reg2RGConfig:
        """A copy whose LLM has the architecture `arch` (a key of LLM_ARCHS or an old alias)."""
        arch = llm_arch_name(arch)
        # built from the shape, not a path
        return self.replace(llm_name=arch, llm_path=None, **LLM_ARCHS[arch])

    # ---- derived sizes -------------------------------------------------------------------------------------
    @property
    def vit_grid(self) -> Size3:
        """Patches per axis of the vision encoder, e.g. (8, 8, 16) for 256x256x64 / 32x32x4."""
        return tuple(s // p for s, p in zip(self.image_size, self.vit_patch))  # type: ignore[return-value]

    @property
    def mask_grid(self) -> Size3:
        return tuple(s // p for s, p in zip(self.image_size, self.mask_patch))  # type: ignore[return-value]

    @property
    def vit_tokens(self) -> int:
        """Tokens the ViT emits per image (1024 in the paper)."""
        h, w, d = self.vit_grid
        return h * w * d

    @property
    def texture_tokens(self) -> int:
        """Visual tokens per region from the image path: the Perceiver latents (texture, or LFD-off masked
        CT)."""
        return self.perceiver_latents if (self.use_texture or not self.decoupled) else 0

    @property
    def geometry_tokens(self) -> int:
        """Geometry tokens per region: 1 with LFD and the geometry switch on, else 0."""
        return 1 if (self.decoupled and self.use_geometry) else 0

    @property
    def region_tokens(self) -> int:
        """Placeholder tokens per region (33 in the paper: 32 texture + 1 geometry)."""
        return self.texture_tokens + self.geometry_tokens

    @property
    def global_tokens(self) -> int:
        return self.perceiver_latents if self.use_global else 0

    def validate(self) -> Reg2RGConfig:
        """Raise a KitError naming the first inconsistent setting; returns self."""
        for name, patch in (("vit_patch", self.vit_patch), ("mask_patch", self.mask_patch)):
            bad = [f"{s} % {p}" for s, p in zip(self.image_size, patch) if p <= 0 or s % p]
            if bad:
                raise KitError(
                    f"model config: {name} {patch} does not divide image_size {self.image_size} "
                    f"({', '.join(bad)} != 0); choose a patch size that divides the profile's image_size"
                )
        for name, dim in (("vit_dim", self.vit_dim), ("mask_dim", self.mask_dim)):
            if dim % 3:
                raise KitError(
                    f"model config: {name}={dim} must be divisible by 3 (one position table per axis)"
                )
        for name, rows, grid in (("vit_pos_rows", self.vit_pos_rows, self.vit_grid),
                                 ("mask_pos_rows", self.mask_pos_rows, self.mask_grid)):
            if rows is not None and any(r < g for r, g in zip(rows, grid)):
                raise KitError(f"model config: {name} {rows} has fewer rows than the patch grid {grid}")
        if self.vision_checkpoint and not self.vit_patch_norm:
            raise KitError(
                f"model config: vision_checkpoint {self.vision_checkpoint} is a RadFM ViT3D, which has the "
                "patch LayerNorm; set model.vision_patch_norm: true to load it"
            )
        if self.vision_standardize and not self.freeze_vision:
            raise KitError("model config: vision_standardize needs a frozen ViT (its statistics are computed "
                           "once, from the train split's features)")
        if self.rereference_sentences and not self.rereference:
            raise KitError("model config: rereference_sentences needs rereference (the sentence insertions "
                           "repeat the ones after each region head)")
        if self.llm_finetune not in ("lora", "full", "frozen"):
            raise KitError(f"model config: llm_finetune={self.llm_finetune!r}; expected lora, full or frozen")
        if self.region_tokens == 0:
            raise KitError(
                "model config: use_texture and use_geometry are both off: a region would have no tokens"
            )
        if self.llm_hidden % self.llm_heads or self.llm_heads % self.llm_kv_heads:
            raise KitError(f"model config: llm_hidden {self.llm_hidden} / heads {self.llm_heads} / kv heads "
                           f"{self.llm_kv_heads} are inconsistent")
        return self

    # ---- (de)serialisation ---------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Reg2RGConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise KitError(f"model config: unknown fields {', '.join(unknown)}")
        return cls(**data).validate()

    def save(self, path: str | Path) -> Path:
        return write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Reg2RGConfig:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise BadInputError(path, f"cannot read the model config ({err})") from None
        try:
            return cls.from_dict(data)
        except (KitError, TypeError) as err:
            raise BadInputError(path, str(err)) from None


#: What the CPU presets share: a patch that divides the profiles' 32x32x8 and 64x64x16 images, a randomly
#: initialised single-channel ViT (nothing pretrained to repeat channels for), a fully trained LLM from
#: scratch, and a short instruction (the paper's ~90-token wording would dominate a tiny model's context).
_CPU_COMMON: dict[str, Any] = dict(
    image_size=(64, 64, 16),
    in_channels=1,
    vit_patch=(16, 16, 4),
    vit_pos_rows=None,
    mask_patch=(16, 16, 4),
    perceiver_ff_mult=2,
    llm_vocab=2048,
    llm_max_positions=2048,
    llm_finetune="full",
    instruction=SHORT_INSTRUCTION,
)

#: Field values of each preset (everything not listed keeps the paper default above).
PRESETS: dict[str, dict[str, Any]] = {
    "cpu-tiny": dict(
        _CPU_COMMON,
        vit_dim=96,
        vit_depth=2,
        vit_heads=4,
        vit_dim_head=24,
        vit_mlp=192,
        perceiver_depth=1,
        perceiver_heads=4,
        perceiver_dim_head=24,
        perceiver_latents=8,
        mask_dim=48,
        mask_depth=1,
        mask_heads=2,
        mask_dim_head=24,
        mask_mlp=96,
        llm_name="scratch-2x128",
        **LLM_ARCHS["scratch-2x128"],
    ),
    "cpu-small": dict(
        _CPU_COMMON,
        vit_dim=192,
        vit_depth=4,
        vit_heads=4,
        vit_dim_head=48,
        vit_mlp=384,
        perceiver_depth=2,
        perceiver_heads=4,
        perceiver_dim_head=48,
        perceiver_latents=16,
        mask_dim=96,
        mask_depth=2,
        mask_heads=4,
        mask_dim_head=24,
        mask_mlp=192,
        llm_name="scratch-4x256",
        **LLM_ARCHS["scratch-4x256"],
    ),
    "paper": dict(llm_name="llama2-7b", **LLM_ARCHS["llama2-7b"]),
}
#: The preset names used before 2026-12-03: still accepted by `Reg2RGConfig.preset` and profiles.
PRESET_ALIASES: dict[str, str] = {"tiny": "cpu-tiny", "small": "cpu-small"}
