"""The official Reg2RG checkpoint: its key layout and how it loads into this kit's model.

(The kit's own `save_pretrained` folders and RadFM's ViT3D / Perceiver files are read in `weights.py`.)

Official Reg2RG whole-model checkpoint -> this model (`load_official_checkpoint`), the documented key mapping:

    embedding_layer.weight   -> rows [:V] of the LLM input embedding table (V = base vocabulary)
    embedding_layer.<name>   -> embedding_layer.<name>   (same names and shapes; `official_key_shapes`)
    lang_model.<key>         -> lang_model.<key>, matched after normalising peft naming on both sides:
        "base_model.model." prefix, ".base_layer" (peft >= 0.7) and the ".default" adapter name are ignored;
        embed_tokens / lm_head with fewer rows than ours (our table is resized for the added tokens) fill
        rows [:n]

RadFM: `RadFM_vit3d.pth` loads strictly into `embedding_layer.vision_encoder`;
`RadFM_perceiver_fc.pth["perceiver"]` strictly into `embedding_layer.perceiver` (its `fc` targets a 5120-wide
LLM and is not used).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from reg2rg_lib.errors import BadInputError
from reg2rg_lib.model.weights import read_state_dict

#: Facts of the official layout (`../shared/reference/reg2rg_checkpoint_layout.json`), kept here so that the
#: paper preset can be checked where that file is absent: parameter counts, and the number and sha256 of the
#: `json.dumps` of the ordered {name: shape} dict of the embedding layer (incl. `weight` [32000, 4096]).
PAPER_PARAMETER_COUNTS: dict[str, int] = {
    "vision_encoder": 66_208_000, "mask_encoder": 6_569_359, "perceiver": 37_802_496, "fc": 3_149_824,
    "mask_fc": 1_048_576, "lora": 4_194_304,
}
PAPER_OFFICIAL_KEY_COUNT = 259
PAPER_OFFICIAL_KEYS_SHA256 = "255caf26f289ff6f49d6d2c0078cd0188a89b6b4c8f3f26bdbd5bdd0b627274b"


@dataclass
class LoadReport:
    """What `load_official_checkpoint` did: keys loaded, own keys left untouched, checkpoint keys not used."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    partial_rows: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (
            f"loaded {len(self.loaded)} tensors ({len(self.partial_rows)} into the first rows of a larger "
            f"table), {len(self.missing)} own tensors not in the checkpoint, {len(self.unexpected)} "
            "checkpoint tensors unused"
        )


_PEFT_NOISE = re.compile(r"(?<=^lang_model\.)base_model\.model\.|\.base_layer(?=\.)|\.default(?=\.)")


def _canonical_lang_key(key: str) -> str:
    """`lang_model.` key with peft's wrapper prefix, `.base_layer` and `.default` removed."""
    return _PEFT_NOISE.sub("", key)


def load_official_checkpoint(model, source, strict: bool = False) -> LoadReport:
    """Load the official Reg2RG whole-model checkpoint (path or state dict) into `model` (see module
    docstring).

    Shape mismatches are errors (naming the key); with `strict`, missing or unused keys are errors too.
    """
    state = read_state_dict(source)
    where = source if not isinstance(source, Mapping) else "state dict"
    own = model.state_dict()
    lang_index = {_canonical_lang_key(k): k for k in own if k.startswith("lang_model.")}
    embed_key = next(k for k in own if k.startswith("lang_model.") and k.endswith("embed_tokens.weight"))
    report = LoadReport()
    touched: set[str] = set()
    with torch.no_grad():
        # the official input table (`embedding_layer.weight`) goes last: it wins over lang_model's own copy
        for key, tensor in sorted(state.items(), key=lambda kv: kv[0] == "embedding_layer.weight"):
            if key == "embedding_layer.weight":
                target = embed_key
            elif key.startswith("embedding_layer."):
                target = key if key in own else None
            elif key.startswith("lang_model."):
                target = lang_index.get(_canonical_lang_key(key))
            else:
                target = None
            if target is None:
                report.unexpected.append(key)
                continue
            dest = own[target]
            if tuple(dest.shape) != tuple(tensor.shape):
                grows = (dest.dim() == 2 and tensor.dim() == 2 and dest.shape[1] == tensor.shape[1]
                         and tensor.shape[0] < dest.shape[0] and target.endswith(("embed_tokens.weight",
                                                                                  "lm_head.weight")))
                if not grows:
                    raise BadInputError(where, f"{key}: shape {list(tensor.shape)} does not fit {target} "
                                               f"{list(dest.shape)}")
                dest[: tensor.shape[0]].copy_(tensor)
                report.partial_rows.append(key)
            else:
                dest.copy_(tensor)
            report.loaded.append(key)
            touched.add(target)
    report.missing = [k for k in own if k not in touched]
    if strict and (report.unexpected or report.missing):
        raise BadInputError(where, f"strict load: {len(report.missing)} missing (e.g. {report.missing[:3]}), "
                                   f"{len(report.unexpected)} unused (e.g. {report.unexpected[:3]})")
    return report


