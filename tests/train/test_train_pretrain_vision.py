"""Vision pretraining (the CPU stand-in for RadFM's): a smoke run on the train split, the RadFM-format round
trip through `vision_checkpoint`, frozen as in the paper, and carried inside a trained model's folder."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from reg2rg_lib.data.prep import load_cache
from reg2rg_lib.errors import KitError
from reg2rg_lib.metrics.labeler import RuleLabeler
from reg2rg_lib.model import Reg2RG, Reg2RGConfig, load_tokenizer
from reg2rg_lib.model.weights import read_pretrained, read_state_dict
from reg2rg_lib.profiles import load_profile
from reg2rg_lib.train.checkpoints import step_dir_name
from reg2rg_lib.train.pretrain_vision import (
    CHECKPOINT_NAME,
    REPORT_NAME,
    PretrainSettings,
    build_encoder,
    crop_set,
    pretrain_encoder,
    pretrain_for_profile,
)
from reg2rg_lib.train.run import train_run

_RULES = RuleLabeler()
#: a RadFM-format ViT3D has the patch LayerNorm, which the smoke profile (as the demo's) drops; the
#: `vit_pretrained` ablation row turns it back on the same way
RADFM = {"model.vision_patch_norm": True}


def labels(texts):
    return _RULES.label(texts).to_numpy()


@pytest.fixture(scope="module")
def pretrained(smoke):
    report = pretrain_for_profile("smoke", smoke.vision, labels, progress=False)
    return smoke, report


def test_pretraining_uses_train_only_and_reports_validation_probes(pretrained):
    smoke, report = pretrained
    cache = load_cache(smoke.cache)
    n_train = sum(len(r.regions) + 1 for r in cache.cases("train"))  # region crops + one global image each
    n_val = sum(len(r.regions) + 1 for r in cache.cases("validation"))
    assert report["crops"] == {"train": n_train, "validation": n_val}
    assert json.loads((smoke.vision / REPORT_NAME).read_text())["crops"] == report["crops"]
    assert len(report["epoch_loss"]) == load_profile("smoke").pretrain.epochs
    assert all(np.isfinite(report["epoch_loss"]))
    for arm in ("random_init", "pretrained"):
        probe = report["probe_validation"][arm]
        assert 0.0 <= probe["findings_micro_f1"] <= 1.0 and 0.0 <= probe["organ_accuracy"] <= 1.0
    # the profile's objective (simmim) has no label heads; the findings objectives' heads are scored too
    assert report["objective"] == load_profile("smoke").pretrain.objective
    assert ("heads" in report["probe_validation"]["pretrained"]) == (report["objective"] != "simmim")
    # early stopping on validation: the kept epoch is the best-scoring one
    assert report["best_epoch"] == int(np.argmax(report["epoch_validation_score"])) + 1


def test_radfm_format_round_trip_through_vision_checkpoint(pretrained):
    smoke, _ = pretrained
    ckpt = smoke.vision / CHECKPOINT_NAME
    state = read_state_dict(ckpt)  # torch.load(weights_only=True): tensors only
    cfg = Reg2RGConfig.from_profile(load_profile("smoke", RADFM))
    assert set(state) == set(build_encoder(cfg).state_dict())
    model = Reg2RG(cfg.replace(vision_checkpoint=str(ckpt)), load_tokenizer(smoke.tokenizer))
    loaded = model.embedding_layer.vision_encoder.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    # frozen (paper)
    assert not any(p.requires_grad for p in model.embedding_layer.vision_encoder.parameters())
    random_model = Reg2RG(cfg, load_tokenizer(smoke.tokenizer))
    key = next(iter(state))
    assert not torch.equal(random_model.embedding_layer.vision_encoder.state_dict()[key], state[key])


def test_a_trained_model_carries_its_pretrained_vit(pretrained, tmp_path):
    smoke, _ = pretrained
    profile = load_profile("smoke", {"model.vision_checkpoint": "pretrained", **RADFM})
    run = smoke.run("vit_pretrained")
    train_run(profile, run, max_steps=2, save_every=2, progress=False)
    config = json.loads((run / "run_config.json").read_text())["model"]
    assert config["vision_checkpoint"] == str(smoke.vision_checkpoint)
    cfg, _, saved, _ = read_pretrained(run / "checkpoints" / step_dir_name(2) / "model")
    assert cfg.vision_checkpoint is None and cfg.extra["vision_pretrained_from"] == str(
        smoke.vision_checkpoint
    )
    state = read_state_dict(smoke.vision_checkpoint)
    for k, v in state.items():
        assert torch.equal(saved[f"embedding_layer.vision_encoder.{k}"], v)


def test_findings_objective_learns_and_simmim_runs(smoke):
    cache = load_cache(smoke.cache)
    cfg = Reg2RGConfig.from_profile(load_profile("smoke"))
    train = crop_set(cache, "train", labels)
    _, losses, _ = pretrain_encoder(
        cfg, train, PretrainSettings(objective="findings", epochs=6, lr=3e-3), False
    )
    assert losses[-1] < losses[0]
    val = crop_set(cache, "validation", labels)
    _, losses, scores = pretrain_encoder(
        cfg, train, PretrainSettings(objective="simmim", epochs=2), False, val=val
    )
    assert np.isfinite(losses[0]) and losses[0] > 0 and len(scores) == 2 and all(s < 0 for s in scores)


def test_unknown_objective_is_a_clear_error():
    with pytest.raises(KitError, match="unknown pretraining objective 'clip'"):
        PretrainSettings.from_profile(load_profile("smoke").pretrain, objective="clip")


def test_cli(smoke, tmp_path, capsys):
    from reg2rg_lib.cli import main

    out = tmp_path / "vision"
    code = main(["pretrain-vision", "--profile", "smoke", "--out", str(out), "--cache", str(smoke.cache),
                 "--objective", "findings+organ", "--epochs", "1", "--quiet"])
    assert code == 0 and (out / CHECKPOINT_NAME).is_file()
    assert "validation probe findings micro-F1" in capsys.readouterr().out
    assert json.loads((out / REPORT_NAME).read_text())["objective"] == "findings+organ"


def test_vit_pretrained_ablation_points_at_the_profile_folder(tmp_path):
    from reg2rg_lib.experiments.grid import ablation
    from reg2rg_lib.paths import RunPaths

    paths = RunPaths(tmp_path)
    cfg = Reg2RGConfig.from_profile(load_profile("smoke"), ablation("vit_pretrained").changes, paths=paths)
    assert cfg.vision_checkpoint == str(tmp_path.resolve() / "vision" / CHECKPOINT_NAME)
    random_vit = Reg2RGConfig.from_profile(load_profile("smoke"), ablation("vit_random").changes, paths=paths)
    assert random_vit.vision_checkpoint is None


def test_training_without_the_pretrained_vit_says_what_to_run(smoke, tmp_path):
    import shutil

    from reg2rg_lib.paths import RunPaths

    other = RunPaths(tmp_path / "out")  # the smoke inputs, but no vision/ folder
    shutil.copytree(smoke.cache, other.cache)
    shutil.copytree(smoke.tokenizer, other.tokenizer)
    profile = load_profile("smoke", {"model.vision_checkpoint": "pretrained", **RADFM})
    with pytest.raises(
        KitError, match="no pretrained vision encoder; run `reg2rg pretrain-vision --profile smoke"
    ):
        train_run(profile, other.run("full"), max_steps=1, progress=False)


def test_ensure_pretrained_vision_pretrains_what_a_run_loads_then_reuses_it(smoke, tmp_path, monkeypatch):
    import shutil

    from reg2rg_lib.experiments.grid import grid
    from reg2rg_lib.paths import RunPaths
    from reg2rg_lib.train import pretrain_vision as pv

    paths = RunPaths(tmp_path / "out")
    shutil.copytree(smoke.cache, paths.cache)
    profile = load_profile("smoke")  # model.vision_checkpoint null; its grid has vit_pretrained
    alone = pv.ensure_pretrained_vision(profile, paths, labels, progress=False)  # the profile's own model
    assert alone.needed_by == () and alone.report is None and not alone.pretrained
    assert "no pretraining here" in alone.message and not paths.vision.exists()

    first = pv.ensure_pretrained_vision(profile, paths, labels, grid(profile.ablations), progress=False)
    assert first.needed_by == ("vit_pretrained",) and first.pretrained and first.checkpoint.is_file()
    assert first.report == json.loads((paths.vision / REPORT_NAME).read_text())
    assert first.report["objective"] == profile.pretrain.objective
    assert first.message.startswith(f"ViT3D pretrained ({profile.pretrain.objective}, ")
    stamp = first.checkpoint.stat().st_mtime_ns
    again = pv.ensure_pretrained_vision(profile, paths, labels, grid(profile.ablations), progress=False)
    assert not again.pretrained and again.report == first.report and again.message == first.message
    assert first.checkpoint.stat().st_mtime_ns == stamp

    calls = []  # what would be pretrained again, and why (without pretraining)
    monkeypatch.setattr(pv, "pretrain_for_profile", lambda *a, **k: calls.append(k.get("objective")))
    other = "findings" if profile.pretrain.objective != "findings" else "simmim"
    pv.ensure_pretrained_vision(profile, paths, labels, grid(profile.ablations), objective=other)
    pv.ensure_pretrained_vision(profile, paths, labels, grid(profile.ablations), force=True)
    report = json.loads((paths.vision / REPORT_NAME).read_text())
    report["vision_config"]["vit_dim"] += 1  # pretrained for another ViT than the profile's
    (paths.vision / REPORT_NAME).write_text(json.dumps(report))
    pv.ensure_pretrained_vision(profile, paths, labels, grid(profile.ablations))
    assert calls == [other, None, None]
