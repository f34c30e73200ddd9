"""Training the real Reg2RG (tiny preset) on the smoke-profile inputs of tests/conftest.py."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys

import pytest
import torch

from reg2rg_lib.errors import KitError
from reg2rg_lib.profiles import load_profile
from reg2rg_lib.train.loop import read_train_log
from reg2rg_lib.train.run import train_run


def test_rra_order_is_a_function_of_seed_epoch_and_case(smoke_dataset):
    from reg2rg_lib.regions import REGIONS

    ds, _, cache = smoke_dataset()
    first = [ds[i]["sample"].order for i in range(len(ds))]
    assert first == [ds[i]["sample"].order for i in range(len(ds))]  # same epoch: same orders
    ds.set_epoch(1)
    assert first != [ds[i]["sample"].order for i in range(len(ds))]  # a new epoch reshuffles
    item = ds[0]
    rec = cache.cases("train")[0]
    geometry = cache.load(rec.name)["geometry"]  # (R, H, W, D) in canonical order
    for i, region in enumerate(item["sample"].regions):  # the masks follow the prompt order
        assert torch.equal(item["region_masks"][i, 0], geometry[rec.regions.index(region)].bool())
    assert f"The region 0 is {item['sample'].regions[0]}:" in item["sample"].target
    test_ds, _, _ = smoke_dataset(shuffle=False)
    orders = [test_ds[i]["sample"].order for i in range(len(test_ds))]
    assert all(o == sorted(o) for o in orders)
    assert all(list(test_ds[i]["sample"].regions) == sorted(test_ds[i]["sample"].regions, key=REGIONS.index)
               for i in range(len(test_ds)))


def test_region_dropout_keeps_prompt_tensors_and_target_aligned(smoke_dataset):
    from reg2rg_lib.samples.dataset import ReportDataset

    ds, _, cache = smoke_dataset()
    drop = ReportDataset(cache, "train", ds.tokenizer, ds.cfg, shuffle_regions=True, region_dropout=0.9)
    seen_fewer = False
    for epoch in range(4):
        drop.set_epoch(epoch)
        for i in range(len(drop)):
            item, rec = drop[i], drop.records[i]
            regions = item["sample"].regions
            assert 1 <= len(regions) <= len(rec.regions) and len(set(regions)) == len(regions)
            seen_fewer |= len(regions) < len(rec.regions)
            geometry = cache.load(rec.name)["geometry"]
            assert item["region_masks"].shape[0] == len(regions)
            for j, region in enumerate(regions):  # the masks follow the kept regions in prompt order
                assert torch.equal(item["region_masks"][j, 0], geometry[rec.regions.index(region)].bool())
                assert f"The region {j} is {region}:" in item["sample"].target
            assert f"The region {len(regions)} is" not in item["sample"].target
            assert item["sample"].prompt.count("<region>") == len(regions)
    assert seen_fewer
    test = ReportDataset(cache, "test", ds.tokenizer, ds.cfg, shuffle_regions=False, region_dropout=0.9)
    # never at test
    assert all(list(test[i]["sample"].regions) == list(test.records[i].regions) for i in range(len(test)))
    with pytest.raises(KitError, match="region_dropout"):
        ReportDataset(cache, "train", ds.tokenizer, ds.cfg, region_dropout=1.0)


def test_cached_features_give_the_raw_images_loss(smoke_dataset):
    from reg2rg_lib.samples.collate import Collator, model_inputs
    from reg2rg_lib.samples.features import feature_cache_for

    raw, model, cache = smoke_dataset()
    names = [r.name for r in cache.cases("train")]
    feats = feature_cache_for(model, cache, names, progress=False)
    cached, _, _ = smoke_dataset(features=feats)
    collate = Collator(model.tokenizer.pad_token_id)
    a = collate([raw[0], raw[1]])
    b = collate([cached[0], cached[1]])
    assert "region_images" in a and "region_feats" in b and "region_images" not in b
    assert a["input_ids"].shape[1] == max(len(raw[i]["sample"].input_ids) for i in (0, 1))  # dynamic padding
    with torch.no_grad():
        assert model(**model_inputs(a)).loss.item() == pytest.approx(
            model(**model_inputs(b)).loss.item(), rel=1e-5
        )
    # new encoder weights -> a new key (a stale feature is never read)
    key = feats.key
    with torch.no_grad():
        next(model.embedding_layer.vision_encoder.parameters()).add_(1.0)
    assert feature_cache_for(model, cache, names[:1], progress=False).key != key


def test_one_feature_cache_decision_and_one_tokenizer_builder(smoke_dataset, smoke):
    from reg2rg_lib.data.prep import load_cache
    from reg2rg_lib.model import load_tokenizer
    from reg2rg_lib.model.tokenizer import tokenizer_for_run, tokenizer_from_cache
    from reg2rg_lib.samples.features import use_feature_cache

    _, model, _ = smoke_dataset()
    assert model.config.freeze_vision
    assert (
        use_feature_cache(model, None)
        and use_feature_cache(model, True)
        and not use_feature_cache(model, False)
    )
    model.embedding_layer.vision_encoder = None  # no ViT: nothing to cache, whatever the setting
    assert not use_feature_cache(model, True)
    # notebook 02's in-memory tokenizer is the one `reg2rg train` saved (same texts, same BPE)
    built = tokenizer_from_cache(load_cache(smoke.cache))
    assert built.get_vocab() == load_tokenizer(smoke.tokenizer).get_vocab()
    assert tokenizer_for_run(smoke.root).get_vocab() == built.get_vocab()


def test_resumed_real_run_logs_the_same_losses(smoke, trained):
    quiet = {"progress": False}
    cut = smoke.run("cut")
    train_run("smoke", cut, max_steps=2, save_every=2, **quiet)
    resumed = train_run("smoke", cut, max_steps=4, save_every=2, resume=True, **quiet)
    assert resumed.resumed_from == 2
    assert [r["loss"] for r in read_train_log(cut)] == [r["loss"] for r in read_train_log(trained)]
    full_digest = (trained / "train_summary.json").read_text()
    assert resumed.weights_sha256 in full_digest
    assert list(trained.glob("tensorboard/events.out.tfevents.*"))
    assert (trained / "checkpoints" / "step-00000004" / "model" / "config.json").is_file()


def test_bad_case_file_is_named(smoke, tmp_path):
    import shutil

    from reg2rg_lib.data.prep import load_cache

    cache_copy = tmp_path / "cache"
    shutil.copytree(smoke.cache, cache_copy)
    victim = load_cache(cache_copy).cases("train")[1]
    (cache_copy / "cases" / f"{victim.name}.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(KitError, match=re.escape(victim.name)):
        train_run("smoke", tmp_path / "run", cache_dir=cache_copy, tokenizer_dir=smoke.tokenizer, max_steps=1,
                  progress=False)


def test_missing_inputs_say_what_to_run(tmp_path):
    with pytest.raises(KitError, match="missing prep cache .* run notebook 01"):
        train_run("demo", tmp_path / "runs" / "full", max_steps=1, progress=False)


def test_training_only_trains_a_missing_input_is_one_line_naming_it(smoke, tmp_path):
    # train_run builds nothing, not even for the smoke profile (its callers run samples.inputs.ensure_inputs)
    missing = tmp_path / "no_cache"
    with pytest.raises(KitError) as err:
        train_run("smoke", tmp_path / "run", cache_dir=missing, tokenizer_dir=smoke.tokenizer, max_steps=1,
                  progress=False)
    message = str(err.value)
    assert "\n" not in message and str(missing) in message and "`reg2rg prepare --profile smoke" in message
    assert not missing.exists()
    with pytest.raises(KitError, match="missing prep cache .* notebook 01"):
        train_run("smoke", tmp_path / "out" / "runs" / "full", max_steps=1, progress=False)
    assert not (tmp_path / "out" / "data").exists() and not (tmp_path / "out" / "cache").exists()
    no_tokenizer = tmp_path / "no_tokenizer"
    with pytest.raises(KitError) as err:
        train_run("smoke", tmp_path / "run", cache_dir=smoke.cache, tokenizer_dir=no_tokenizer, max_steps=1,
                  progress=False)
    assert "\n" not in str(err.value) and f"missing tokenizer {no_tokenizer}: `reg2rg train" in str(err.value)
    assert not no_tokenizer.exists()


def test_the_cli_builds_the_inputs_it_trains_on(smoke, tmp_path):
    # `reg2rg train` makes sure of the inputs before training: here the tokenizer, trained on the cache
    from reg2rg_lib.cli import main
    from reg2rg_lib.model import load_tokenizer

    tokenizer = tmp_path / "tokenizer"
    code = main(["train", "--profile", "smoke", "--out", str(tmp_path / "run"), "--cache", str(smoke.cache),
                 "--tokenizer", str(tokenizer), "--max-steps", "1"])
    assert code == 0 and len(read_train_log(tmp_path / "run")) == 1
    assert load_tokenizer(tokenizer).get_vocab() == load_tokenizer(smoke.tokenizer).get_vocab()


@pytest.mark.slow
def test_torchrun_two_processes_end_with_the_same_weights(smoke, tmp_path):
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    with socket.socket() as sock:  # a free port for the rendezvous
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    # no tokenizer yet: rank 0 trains it (samples.inputs.ensure_inputs_once) while rank 1 waits, then reads it
    tokenizer = tmp_path / "tokenizer"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port,
           "-m", "reg2rg_lib.cli", "train", "--profile", "smoke", "--max-steps", "4", "--out", str(run),
           "--cache", str(smoke.cache), "--tokenizer", str(tokenizer)]
    # smoke trains the region label head, which is one process only: refused at once, in one line
    refused = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    # (torchrun adds its own launcher traceback after a child's error line)
    assert refused.returncode != 0 and not (run / "train_log.csv").exists()
    assert "error: profile smoke: train.label_weight trains in one process" in refused.stderr
    res = subprocess.run(cmd + ["--set", "train.label_weight=0"], capture_output=True, text=True, env=env,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "world_size 2" in res.stdout
    digests = dict(re.findall(r"rank (\d) weights_sha256 ([0-9a-f]{64})", res.stdout))
    assert set(digests) == {"0", "1"} and digests["0"] == digests["1"]
    assert len(read_train_log(run)) == 4
    # by rank 0 only (in the refused launch, which builds the inputs before training starts)
    assert (refused.stdout + refused.stderr + res.stdout + res.stderr).count("training the tokenizer") == 1


def test_accelerate_configs_load(repo_root):
    from accelerate.commands.config.config_args import load_config_from_file

    configs = {
        p.stem: load_config_from_file(str(p)) for p in (repo_root / "configs" / "accelerate").glob("*.yaml")
    }
    assert {"ddp", "deepspeed_zero2", "fsdp"} <= set(configs)
    assert configs["deepspeed_zero2"].deepspeed_config["zero_stage"] == 2
    assert configs["deepspeed_zero2"].deepspeed_config["gradient_accumulation_steps"] == load_profile(
        "paper").train.grad_accum
    assert configs["fsdp"].distributed_type.value == "FSDP"
    assert all(c.mixed_precision == "bf16" for n, c in configs.items() if n != "cpu_2proc")


def test_region_name_weight_one_is_the_model_loss_and_names_are_found(smoke_dataset):
    from reg2rg_lib.samples.collate import Collator, model_inputs
    from reg2rg_lib.train.run import weighted_lm_loss

    ds, model, _ = smoke_dataset()
    item = ds[0]
    sample, tok = item["sample"], model.tokenizer
    names = tok.decode([sample.input_ids[p] for p in item["name_positions"]])
    assert names.split() == " ".join(sample.regions).split()  # every organ name of the target, in order
    batch = Collator(tok.pad_token_id)([ds[0], ds[1]])
    inputs = model_inputs(batch)
    with torch.no_grad():
        out = model(**inputs)
        plain = weighted_lm_loss(out.logits, inputs["labels"], batch["name_mask"], 1.0)
        heavy = weighted_lm_loss(out.logits, inputs["labels"], batch["name_mask"], 10.0)
    assert plain.item() == pytest.approx(out.loss.item(), rel=1e-5)
    assert heavy.item() > plain.item()


def test_train_threads_setting_applies_and_is_restored(smoke, tmp_path):
    before = torch.get_num_threads()
    prof = load_profile("smoke", overrides={"train.threads": 1})
    result = train_run(
        prof,
        tmp_path / "run",
        cache_dir=smoke.cache,
        tokenizer_dir=smoke.tokenizer,
        max_steps=1,
        progress=False,
    )
    assert result.steps == 1 and torch.get_num_threads() == before
    assert (
        __import__("json").loads((tmp_path / "run" / "run_config.json").read_text())["settings"]["threads"]
        == 1
    )


def test_gradient_checkpointing_run_logs_the_same_losses(smoke, trained):
    # recomputing activations in backward changes memory and time, not the numbers
    profile = load_profile("smoke", {"train.gradient_checkpointing": True})
    run = smoke.run("gc")
    train_run(profile, run, max_steps=2, save_every=2, progress=False)
    assert [r["loss"] for r in read_train_log(run)] == pytest.approx(
        [r["loss"] for r in read_train_log(trained)][:2], rel=1e-5)



def test_train_run_hands_the_profiles_dropout_settings_to_the_dataset(smoke, monkeypatch):
    """`train.geometry_dropout` and `train.branch_dropout` reach the training dataset, whose codes then zero
    geometry tokens (the run's resume key records them too)."""
    import reg2rg_lib.train.run as run_module
    from reg2rg_lib.model.reg2rg import BRANCH_GEOMETRY

    built = []

    class Recording(run_module.ReportDataset):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built.append(self)

    monkeypatch.setattr(run_module, "ReportDataset", Recording)
    profile = load_profile("smoke", overrides={"train.geometry_dropout": 0.3, "train.branch_dropout": 0.1})
    train_run(profile, smoke.run("geometry_dropout"), max_steps=1, progress=False)
    (ds,) = built
    assert (ds.geometry_dropout, ds.branch_dropout) == (0.3, 0.1)
    codes = torch.cat([ds.branch_drop(f"case_{k}", 10) for k in range(50)])
    assert (codes == BRANCH_GEOMETRY).float().mean() > 0.25  # geometry zeroed in ~0.1 + 0.3 of the regions
