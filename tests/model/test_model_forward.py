"""A tiny Reg2RG on CPU: forward, backward, generation, cached features, ablations, input checks."""

from __future__ import annotations

import random

import pytest
import torch

from reg2rg_lib.errors import KitError
from reg2rg_lib.model import Reg2RG, build_sample, collate
from reg2rg_lib.model.prompt import GEOMETRY, TEXTURE
from reg2rg_lib.model.reg2rg import KIND_CODES
from reg2rg_lib.samples.vision_inputs import vision_inputs

REGIONS = ["heart", "lung", "pleura"]
REPORTS = {"heart": "The heart is normal.", "lung": "A 4 mm nodule.", "pleura": "Mild effusion."}


def _batch(model, specs, padding_side="right", with_targets=True):
    samples = [build_sample(regs, REPORTS if with_targets else None, model.tokenizer, model.config)
               for regs in specs]
    return collate(samples, model.tokenizer.pad_token_id, padding_side)


def test_forward_backward_reaches_the_intended_parameters(tiny_model, visual_batch):
    model = tiny_model
    batch = _batch(model, [REGIONS, REGIONS[:2]])
    out = model(**batch, **visual_batch(model.config, 2, 5))
    assert out.logits.shape[:2] == batch["input_ids"].shape and torch.isfinite(out.loss)
    model.zero_grad()
    out.loss.backward()
    el = model.embedding_layer
    for part in (el.perceiver, el.fc, el.mask_encoder, el.mask_fc):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())
    assert el.image_token_weight.grad.abs().sum() > 0 and el.region_token_weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in el.vision_encoder.parameters())  # frozen ViT
    model.zero_grad()


def test_cached_features_equal_raw_images(tiny_model, visual_batch):
    model = tiny_model
    batch = _batch(model, [REGIONS])
    vis = visual_batch(model.config, 1, 3)
    feats = model.encode_vision(torch.cat([vis["global_images"], vis["region_images"]]))
    assert feats.shape == (4, model.config.vit_tokens, model.config.vit_dim) and not feats.requires_grad
    with torch.no_grad():
        a = model(**batch, **vis).logits
        b = model(
            **batch, global_feats=feats[:1], region_feats=feats[1:], region_masks=vis["region_masks"]
        ).logits
    torch.testing.assert_close(a, b)


def test_visual_tokens_depend_on_region_order(tiny_model, visual_batch):
    """Permuting the region inputs changes the output: the model does see which region is where."""
    model = tiny_model
    batch = _batch(model, [REGIONS])
    vis = visual_batch(model.config, 1, 3)
    perm = {k: v if k == "global_images" else v[[2, 0, 1]] for k, v in vis.items()}
    with torch.no_grad():
        assert not torch.allclose(model(**batch, **vis).logits, model(**batch, **perm).logits)


def test_wrong_region_count_is_a_clear_error(tiny_model, visual_batch):
    batch = _batch(tiny_model, [REGIONS])
    with pytest.raises(KitError, match="placeholder positions but"):
        tiny_model(**batch, **visual_batch(tiny_model.config, 1, 2))
    with pytest.raises(KitError, match="pass region_images or region_feats"):
        tiny_model(**batch, global_images=visual_batch(tiny_model.config, 1, 3)["global_images"])


def test_batched_generation_equals_one_by_one(tiny_model, visual_batch):
    model = tiny_model
    specs = [REGIONS, REGIONS[:1]]
    vis = visual_batch(model.config, 2, 4, seed=3)
    batch = _batch(model, specs, padding_side="left", with_targets=False)
    ids = model.generate(
        batch["input_ids"], batch["attention_mask"], **vis, max_new_tokens=8, do_sample=False
    )
    assert ids.shape[0] == 2 and 0 < ids.shape[1] <= 8
    assert not set(ids.flatten().tolist()) & set(model.reg2rg_token_ids)  # never emits placeholders
    splits = [(slice(0, 1), slice(0, 3)), (slice(1, 2), slice(3, 4))]
    for row, (g, r) in enumerate(splits):
        one = _batch(model, [specs[row]], padding_side="left", with_targets=False)
        single = model.generate(
            one["input_ids"],
            one["attention_mask"],
            global_images=vis["global_images"][g],
            region_images=vis["region_images"][r],
            region_masks=vis["region_masks"][r],
            max_new_tokens=8,
            do_sample=False,
        )
        n = single.shape[1]
        assert ids[row, :n].tolist() == single[0].tolist()
    with pytest.raises(KitError, match="left-padded"):
        right = _batch(model, specs, with_targets=False)
        model.generate(right["input_ids"], right["attention_mask"], **vis, max_new_tokens=2)


def test_tiny_model_learns_a_report_and_generates_it(tiny_cfg, tokenizer_factory, visual_batch):
    """Forward + backward + generate end to end: a few Adam steps make greedy decoding reproduce the
    target."""
    torch.manual_seed(0)
    model = Reg2RG(tiny_cfg, tokenizer_factory())
    sample = build_sample(REGIONS, REPORTS, model.tokenizer, model.config)
    batch = collate([sample], model.tokenizer.pad_token_id)
    vis = visual_batch(model.config, 1, 3)
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=3e-3)
    model.train()
    for _ in range(90):
        loss = model(**batch, **vis).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    assert loss.item() < 0.05
    prompt = collate(
        [build_sample(REGIONS, None, model.tokenizer, model.config)], model.tokenizer.pad_token_id, "left"
    )
    ids = model.generate(prompt["input_ids"], prompt["attention_mask"], **vis, max_new_tokens=60)
    assert model.decode(ids)[0] == sample.target


@pytest.mark.parametrize("changes", [dict(decoupled=False), dict(use_global=False, use_geometry=False),
                                     dict(use_texture=False), dict(rra=False)])
def test_ablations_run_from_cache_tensors(tiny_cfg, tokenizer_factory, changes):
    cfg = tiny_cfg.replace(**changes)
    model = Reg2RG(cfg, tokenizer_factory()).eval()
    H, W, D = cfg.image_size
    g = torch.Generator().manual_seed(0)
    geometry = (torch.rand(3, H, W, D, generator=g) > 0.5).float()
    case = {"image": torch.randn(1, H, W, D, generator=g), "full": torch.randn(1, H, W, D, generator=g),
            "texture": torch.randn(3, H, W, D, generator=g), "geometry": geometry}
    vis = vision_inputs(case, cfg)
    if not cfg.decoupled:
        torch.testing.assert_close(vis["region_images"][:, 0], case["full"] * geometry)
        assert vis["region_masks"] is None
    if not cfg.use_global:
        assert vis["global_images"] is None
    sample = build_sample(REGIONS, REPORTS, model.tokenizer, cfg, rng=random.Random(1))
    order = torch.tensor(sample.order)
    vis = {k: (v if v is None or k == "global_images" else v[order]) for k, v in vis.items()}
    with torch.no_grad():
        out = model(**collate([sample], model.tokenizer.pad_token_id), **vis)
    assert torch.isfinite(out.loss)


def test_lora_with_gradient_checkpointing_trains(tiny_cfg, tokenizer_factory, visual_batch):
    cfg = tiny_cfg.replace(llm_finetune="lora", gradient_checkpointing=True)
    model = Reg2RG(cfg, tokenizer_factory()).train()
    llm = model.llm()
    assert getattr(llm, "is_activation_checkpointing", None) or llm.is_gradient_checkpointing
    batch = _batch(model, [REGIONS])
    model(**batch, **visual_batch(cfg, 1, 3)).loss.backward()
    lora_grads = [p.grad for n, p in model.named_parameters() if "lora_A" in n]
    assert lora_grads and all(g is not None for g in lora_grads)
    assert all(p.grad is None for n, p in model.named_parameters() if n.endswith("q_proj.base_layer.weight"))



def test_mask_encoder_chunks_and_bool_masks_give_the_same_tokens(monkeypatch):
    # the geometry encoder runs a batch's masks in cache-sized chunks and casts bool masks itself: same
    # numbers
    import reg2rg_lib.model.geometry as geometry
    from reg2rg_lib.model.config import Reg2RGConfig

    torch.manual_seed(0)
    cfg = Reg2RGConfig.preset("cpu-tiny", image_size=(32, 32, 8))
    enc = geometry.MaskEncoder.from_config(cfg).eval()
    masks = torch.rand(7, 1, 32, 32, 8) > 0.6
    with torch.no_grad():
        whole = enc(masks.float())
        monkeypatch.setattr(geometry, "MASK_CHUNK_VOXELS", 2 * 32 * 32 * 8)  # chunks of 2 masks: 2+2+2+1
        chunked = enc(masks)
    assert chunked.shape == (7, cfg.mask_dim) and chunked.dtype == torch.float32
    torch.testing.assert_close(chunked, whole, rtol=1e-6, atol=1e-6)


def test_mask_encoder_binary_patch_embedding_equals_the_float_path_and_trains_the_same():
    # organ-like masks: most patches are all 0 or all 1 (embedded once), the boundary ones are computed
    from reg2rg_lib.model.config import Reg2RGConfig
    from reg2rg_lib.model.geometry import MaskEncoder

    torch.manual_seed(0)
    cfg = Reg2RGConfig.preset("cpu-tiny", image_size=(32, 32, 8))
    enc = MaskEncoder.from_config(cfg).train()
    masks = torch.zeros(4, 1, 32, 32, 8, dtype=torch.bool)
    masks[0, :, 3:29, 5:20, 1:7] = True  # a box: inside, outside and boundary patches
    masks[1] = torch.rand(1, 32, 32, 8) > 0.5  # boundary patches only
    masks[3] = True  # all inside; masks[2] stays empty (all outside)
    patches = enc.to_patch_embedding[0](masks)
    counts = patches.sum(-1)
    assert bool((counts == 0).any()) and bool((counts == patches.shape[-1]).any())  # both uniform kinds occur
    assert bool(((counts > 0) & (counts < patches.shape[-1])).any())
    embedded = enc.binary_patch_embedding(masks)
    torch.testing.assert_close(embedded, enc.to_patch_embedding(masks.float()), rtol=1e-6, atol=1e-6)

    grads = []
    for m in (masks, masks.float()):  # the binary and the float path give the weights the same gradients
        enc.zero_grad()
        enc(m).square().sum().backward()
        grads.append([p.grad.clone() for p in enc.to_patch_embedding.parameters()])
    for binary, plain in zip(*grads):
        torch.testing.assert_close(binary, plain, rtol=1e-4, atol=1e-5)  # summed in another order


@pytest.mark.parametrize("rereference", [False, True], ids=["paper-prompt", "rereference"])
def test_branch_dropout_zeroes_one_branch_of_one_region(tiny_cfg, tokenizer_factory, visual_batch,
                                                        rereference):
    """`region_drop` (training: branch dropout) zeroes region k's texture tokens or its geometry token
    wherever they are spliced (re-referenced copies too), and nothing else; all-keep codes change nothing."""
    model = Reg2RG(tiny_cfg.replace(rereference=rereference), tokenizer_factory()).eval()
    batch = _batch(model, [REGIONS])
    vis = visual_batch(model.config, 1, 3)
    kinds = model.token_kind[batch["input_ids"][0]]
    with torch.no_grad():
        plain = model.embed_inputs(batch["input_ids"], **vis)[0]
        same = model.embed_inputs(batch["input_ids"], **vis, region_drop=torch.tensor([0, 0, 0]))[0]
        texture = model.embed_inputs(batch["input_ids"], **vis, region_drop=torch.tensor([0, 1, 0]))[0]
        geometry = model.embed_inputs(batch["input_ids"], **vis, region_drop=torch.tensor([2, 0, 0]))[0]
    torch.testing.assert_close(same, plain)
    for dropped, code, region in ((texture, KIND_CODES[TEXTURE], 1), (geometry, KIND_CODES[GEOMETRY], 0)):
        changed = (dropped != plain).any(-1)
        assert torch.all(dropped[changed] == 0) and torch.all(kinds[changed] == code)
        per_region = model.config.texture_tokens if code == KIND_CODES[TEXTURE] else 1
        copies = 2 if rereference else 1  # the prompt's, and the re-referenced one after the region's head
        assert int(changed.sum()) == per_region * copies
        order = (kinds == code).nonzero().squeeze(1)[: 3 * per_region]  # the prompt's, regions in order
        assert changed[order[region * per_region:(region + 1) * per_region]].all()
