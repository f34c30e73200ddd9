"""Prose drift: every sentence that names a table, figure, run or rule is checked against the code that
defines it.

What is read: each markdown cell of `notebooks/*.ipynb` (and the comments and strings of its code cells), the
caption of each committed table (`figures/tables/*.md`, its bold first line) and every string the library
writes at run time (captions, messages; docstrings are not read). What is checked in each sentence:

- "Table N" / "Tables N-M": N is a table of `report.catalog.TABLES`, and a sentence naming one table does not
  describe another (its words match only another table's `words`: "Table 8, the organ-naming table" is drift);
- "Fig. N" / "Figs. N-M" (the paper's) and "Kit Fig. N" (the kit's own): the same against
  `report.catalog.FIGURES`;
- file names `paper_fig<N>_...`, `kit_fig<N>_...` and `table<N>_...`: each is a stem of the catalog;
- run names (`no_lfd`, `llm_<arch>`, `runs/<name>/`, `--runs a,b`, `paths.run("a")`): each is a run of
  `experiments.grid` (or a baseline of `experiments.baselines`);
- rules (`rules()`, e.g. how Fig. 3's case is picked): where a section is about the rule's subject, a sentence
  that describes the rule quotes the code's rule string.

    python -m reg2rg_lib.nbtools.prose        # list the drift found (exit 1), or say that there is none

One file over 400 lines: one checker; its checks read the same sources (notebooks, table captions, library
strings), most of them sentence by sentence (`sentences`), and `check_kit` runs them together.
"""

from __future__ import annotations

import ast
import dataclasses
import io
import re
import sys
import tokenize
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import nbformat

from reg2rg_lib.errors import KitError
from reg2rg_lib.experiments.baselines import BASELINES
from reg2rg_lib.experiments.grid import ABLATIONS, ablation
from reg2rg_lib.model import Reg2RGConfig
from reg2rg_lib.paths import REPO_ROOT
from reg2rg_lib.profiles import (
    AblationsSection,
    DataSection,
    GenerateSection,
    ModelSection,
    PretrainSection,
    TrainSection,
)
from reg2rg_lib.report import catalog, figures
from reg2rg_lib.report.catalog import Entry


@dataclass(frozen=True)
class Rule:
    """A rule the code applies and prose describes: its name, the code's wording (`text`), when a section is
    about it (`about`) and when a sentence there describes it (`describes`), both case-insensitive
    patterns."""

    name: str
    text: str
    about: str
    describes: str


def rules() -> tuple[Rule, ...]:
    """The rules prose must quote as the code states them (read at call time, so a changed rule is seen)."""
    case_study = next(e for e in catalog.FIGURES.values() if "case study" in e.title)
    return (
        Rule(
            f"how Fig. {case_study.number}'s case is picked (report.figures.PICK_RULE)",
            figures.PICK_RULE,
            about=rf"\bFig\.\s*{case_study.number}\b|case study",
            describes=(
                r"\b(?:pick|picks|picked|chosen|choose|chooses|selected)\b|\bthe (?:first )?case "
                r"with\b"
            ),
        ),
    )


# ------------------------------------------------------------------------------------------------------------
# Sentences

_NUMBERS = r"(\d+)((?:\s*(?:-|–|,|and|or|to)\s*\d+)*)"
TABLE_MENTION = re.compile(r"\bTables?\s+" + _NUMBERS)
FIGURE_MENTION = re.compile(r"\b([Kk]it\s+)?(?:Figs?\.|Figures?)\s*" + _NUMBERS)
TABLE_STEM = re.compile(r"\btable\d+_[a-z0-9_]+")
FIGURE_STEM = re.compile(r"\b(?:kit_|paper_)?fig\d+_[a-z0-9_]+")
_BREAK = re.compile(r"^\s*(?:#|```|\||[-*] |\d+\. )")  # a heading, code fence, table row or list item
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z*\"(\[`])")


def sentences(text: str) -> list[str]:
    """`text` (Markdown) as sentences: headings, list items, table rows and code lines stand alone; the lines
    of a paragraph are joined, then split after . ! ? before a capital (so "Fig. 3" and "e.g. x" stay
    whole)."""
    blocks: list[list[str]] = [[]]
    fenced = False
    for line in text.splitlines():
        if line.strip().startswith("```"):
            fenced = not fenced
        if not line.strip() or fenced or _BREAK.match(line):
            blocks.append([])
        if line.strip():
            blocks[-1].append(line.strip())
        if fenced or _BREAK.match(line):
            blocks.append([])
    out = []
    for block in blocks:
        if block:
            out += [s for s in _SENTENCE_END.split(" ".join(block)) if s.strip()]
    return out


def _numbers(first: str, rest: str) -> list[int]:
    """The numbers of "Tables 4-7", "Figs. 5 and 6": a dash or "to" spans a range, a comma or "and" lists."""
    out, prev = [int(first)], int(first)
    for sep, num in re.findall(r"\s*(-|–|,|and|or|to)\s*(\d+)", rest):
        n = int(num)
        out += list(range(prev + 1, n + 1)) if sep in ("-", "–", "to") else [n]
        prev = n
    return out


@dataclass(frozen=True)
class Mention:
    """Where a sentence names tables or figures, and which catalog entries it can mean."""

    start: int
    end: int
    label: str
    entries: tuple[Entry, ...]


def _table_mentions(sentence: str) -> tuple[list[Mention], list[str]]:
    mentions, problems = [], []
    for m in TABLE_MENTION.finditer(sentence):
        nums = _numbers(m.group(1), m.group(2))
        unknown = [n for n in nums if n not in catalog.TABLES]
        if unknown:
            problems.append(f"names Table {', '.join(map(str, unknown))}, which the kit does not define "
                            f"(tables: {', '.join(map(str, catalog.TABLES))})")
        entries = tuple(catalog.TABLES[n] for n in nums if n in catalog.TABLES)
        mentions.append(Mention(m.start(), m.end(), m.group(0), entries))
    return mentions, problems


def _figure_mentions(sentence: str) -> tuple[list[Mention], list[str]]:
    mentions, problems = [], []
    for m in FIGURE_MENTION.finditer(sentence):
        nums = _numbers(m.group(2), m.group(3))
        entries = [e for n in nums for e in catalog.figures_numbered(n, kit_only=bool(m.group(1)))]
        known = {e.number for e in entries}
        unknown = [n for n in nums if n not in known]
        if unknown:
            have = ", ".join(f"{e.number} ({e.stem})" for e in catalog.FIGURES.values())
            problems.append(
                f"names {'kit ' if m.group(1) else ''}Fig. "
                f"{', '.join(map(str, unknown))}, which the kit does not define (figures: {have})"
            )
        mentions.append(Mention(m.start(), m.end(), m.group(0), tuple(entries)))
    return mentions, problems


def _described(sentence: str, mentions: Sequence[Mention], pool: Iterable[Entry]) -> list[str]:
    """Each mention described only by other entries of `pool`: no word of its own entries between the mentions
    before and after it, and the words nearest to it in its clause belong to other entries. ("NLG metrics
    (...; Table 1), clinical efficacy (...; Table 2)": a description may come before its number or after
    it.)"""
    mentions = sorted((m for m in mentions if m.entries), key=lambda m: m.start)
    if not mentions:
        return []
    low = sentence.lower()
    hits: dict[tuple[int, int], set[Entry]] = {}  # (start, end) of a word -> the entries it describes
    for entry in pool:
        for word in entry.words:
            for m in re.finditer(word, low):
                if not any(x.start <= m.start() < x.end for x in mentions):
                    hits.setdefault((m.start(), m.end()), set()).add(entry)
    problems = []
    for i, mention in enumerate(mentions):
        own = set(mention.entries)
        lo = mentions[i - 1].end if i else 0
        hi = mentions[i + 1].start if i + 1 < len(mentions) else len(sentence)
        if any(owners & own for (start, _), owners in hits.items() if lo <= start < hi):
            continue
        clause = _clause(sentence, mention)
        near = [
            (sentence[start:end], owners)
            for (start, end), owners in hits.items()
            if clause[0] <= start < clause[1]
            and min(mentions, key=lambda x: _distance(x, start, end)) is mention
        ]
        if near:
            others = sorted({e for _, owners in near for e in owners}, key=lambda e: (e.stem, e.number))
            words = ", ".join(sorted({w for w, _ in near}))
            problems.append(
                f"names {mention.label} ({'; '.join(e.title for e in mention.entries)}) but describes "
                f"{'; '.join(f'{_kind(e)} {e.number} ({e.title})' for e in others)} (words: {words})"
            )
    return problems


def _clause(sentence: str, mention: Mention) -> tuple[int, int]:
    """(start, end) of the clause around `mention`: from the comma or semicolon before it to the one after
    it."""
    start = max(sentence.rfind(",", 0, mention.start), sentence.rfind(";", 0, mention.start)) + 1
    ends = [i for i in (sentence.find(",", mention.end), sentence.find(";", mention.end)) if i >= 0]
    return start, min(ends, default=len(sentence))


def _distance(mention: Mention, start: int, end: int) -> int:
    return mention.start - end if end <= mention.start else max(0, start - mention.end)


def _kind(entry: Entry) -> str:
    return "Table" if entry.stem.startswith("table") else "Fig."


# ------------------------------------------------------------------------------------------------------------
# Run names

_RUN_PREFIXES = sorted({n.split("_")[0] for n in (*ABLATIONS, *BASELINES) if "_" in n} | {"llm"})
_RUN_SHAPED = re.compile(rf"^(?:{'|'.join(map(re.escape, _RUN_PREFIXES))})_[\w\-<>]+$")
#: Settings that look like runs (`llm_path`, `llm_arch`: profile and model-config fields, not the run
#: `llm_<arch>`): every field name of a profile section or of `Reg2RGConfig`.
_SETTINGS = (DataSection, ModelSection, TrainSection, PretrainSection, GenerateSection, AblationsSection,
             Reg2RGConfig)
_NOT_RUNS = frozenset(f.name for section in _SETTINGS for f in dataclasses.fields(section))
_RUN_PLACES = (
    re.compile(r"`([^`\s]+)`"),  # `no_lfd` (only run-shaped tokens count)
    re.compile(r"\bruns/([\w\-<>]+)"),  # runs/no_lfd/, runs/<name>_s<steps>/
    re.compile(r"--runs[ =]([\w\-,]+)"),  # reg2rg ablate --runs full,no_lfd
    re.compile(r"\.run\(\s*[\"']([\w\-]+)[\"']\s*\)"),  # paths.run("no_lfd")
)


def run_names(sentence: str) -> list[str]:
    """The run names a sentence uses, in order (placeholders such as `llm_<arch>` included)."""
    found = []
    for i, place in enumerate(_RUN_PLACES):
        for m in place.finditer(sentence):
            for name in m.group(1).split(","):
                # runs/<name>_s<steps>/: a shorter grid
                name = re.sub(r"_s(?:\d+|<steps>)$", "", name.strip())
                if name in _NOT_RUNS:
                    continue
                if re.search(r"[a-z]", name) and (i > 0 or name == "full" or _RUN_SHAPED.match(name)):
                    found.append(name)
    return found


def unknown_run(name: str) -> str | None:
    """Why `name` is not a run of the grid or a baseline, or None when it is one (a placeholder that starts
    like a run, `llm_<arch>` or `<name>`, is one)."""
    if "<" in name:
        head = name.split("<")[0]
        known = [*ABLATIONS, *BASELINES, "llm_"]
        return None if any(k.startswith(head) for k in known) else f"placeholder run {name!r} matches no run"
    if name in BASELINES:
        return None
    try:
        ablation(name)
    except KitError as err:
        return str(err)
    return None


# ------------------------------------------------------------------------------------------------------------
# One section of prose


def check_text(text: str, where: str) -> list[str]:
    """The drift in one section of prose (a markdown cell, a caption, a string): one line per problem, naming
    `where` and quoting the sentence."""
    problems = []
    for sentence in sentences(text):
        found = []
        tables, bad = _table_mentions(sentence)
        found += bad + _described(sentence, tables, catalog.TABLES.values())
        figures, bad = _figure_mentions(sentence)
        found += bad + _described(sentence, figures, catalog.FIGURES.values())
        found += [f"names the file {s}, which is no table of report.catalog.TABLES"
                  for s in TABLE_STEM.findall(sentence) if s not in {e.stem for e in catalog.TABLES.values()}]
        found += [f"names the file {s}, which is no figure of report.catalog.FIGURES"
                  for s in FIGURE_STEM.findall(sentence) if s not in catalog.FIGURES]
        found += [f"unknown run {name!r}: {why}" for name in run_names(sentence)
                  if (why := unknown_run(name)) is not None]
        problems += [f"{where}: {p}: \"{_short(sentence)}\"" for p in found]
    return problems + _check_rules(text, where)


def _check_rules(text: str, where: str) -> list[str]:
    problems = []
    for rule in rules():
        if not re.search(rule.about, text, re.IGNORECASE):
            continue
        for sentence in sentences(text):
            if re.search(rule.describes, sentence, re.IGNORECASE) and _plain(rule.text) not in _plain(
                sentence
            ):
                problems.append(f"{where}: describes {rule.name} but does not quote the code's rule "
                                f"\"{rule.text}\": \"{_short(sentence)}\"")
    return problems


def _plain(text: str) -> str:
    """Lower case, Markdown emphasis removed, whitespace collapsed: the form in which prose quotes a rule."""
    return " ".join(re.sub(r"[*_`]", "", text).lower().split())


def _short(sentence: str, limit: int = 160) -> str:
    return sentence if len(sentence) <= limit else sentence[: limit - 3] + "..."


# ------------------------------------------------------------------------------------------------------------
# Where prose is


def notebook_prose(notebook_dir: Path) -> Iterator[tuple[str, str]]:
    """(where, text) of each markdown cell of the notebooks in `notebook_dir`, and of each code cell's
    comments and strings (a parameter's comment says which figure it feeds, a print names a table)."""
    for path in sorted(Path(notebook_dir).glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        for i, cell in enumerate(nb.cells):
            if cell.cell_type == "markdown":
                yield f"{path.name} cell {i}", cell.source
            elif cell.cell_type == "code":
                yield from ((f"{path.name} cell {i}", text) for text in _comments_and_strings(cell.source))


def _comments_and_strings(source: str) -> list[str]:
    """The comments and string literals of a code cell (IPython's `%magic` and `!shell` lines left out)."""
    code = "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(code + "\n").readline))
    except (tokenize.TokenError, SyntaxError):
        return [source]
    keep = (tokenize.COMMENT, tokenize.STRING, getattr(tokenize, "FSTRING_MIDDLE", tokenize.STRING))
    return [t.string.lstrip("#").strip() for t in tokens if t.type in keep]


def caption_prose(tables_dir: Path) -> Iterator[tuple[str, str]]:
    """(where, caption) of each committed table: the bold first line that `report.table_writer.to_markdown`
    writes."""
    for path in sorted(Path(tables_dir).glob("table*.md")):
        first = path.read_text(encoding="utf-8").split("\n\n", 1)[0].strip()
        if first.startswith("**") and first.endswith("**"):
            yield f"{path.parent.name}/{path.name} caption", first.strip("*")


def library_prose(package_dir: Path) -> Iterator[tuple[str, str]]:
    """(file:line, text) of each string the library writes at run time: string literals and f-strings (a
    placeholder as `{}`) outside docstrings and other bare-expression strings."""
    for path in sorted(Path(package_dir).rglob("*.py")):
        if path.resolve() == Path(__file__).resolve():
            continue  # this checker quotes the rules and patterns it looks for
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        skip = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)}
        inner = {id(v) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for v in ast.walk(node)
                 if v is not node}
        rel = path.relative_to(Path(package_dir).parent).as_posix()
        for node in ast.walk(tree):
            if id(node) in skip or id(node) in inner:
                continue
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                yield f"{rel}:{node.lineno}", node.value
            elif isinstance(node, ast.JoinedStr):
                yield f"{rel}:{node.lineno}", "".join(
                    v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)


def caption_numbers(tables_dir: Path) -> list[str]:
    """A committed table whose caption names another table than its file name: `table4_lfd.md` must open with
    "Table 4"."""
    problems = []
    for where, caption in caption_prose(tables_dir):
        stem = where.split("/")[-1].split(".")[0]
        number = int(re.match(r"table(\d+)_", stem).group(1))
        if not caption.startswith(f"Table {number}"):
            problems.append(f'{where}: the file {stem} has a caption for another table: "{_short(caption)}"')
    return problems


def check_sources(sources: Iterable[tuple[str, str]]) -> list[str]:
    """The drift in each (where, text) of `sources`."""
    return [p for where, text in sources for p in check_text(text, where)]


def check_kit(root: Path = REPO_ROOT) -> list[str]:
    """The drift in the kit at `root`: its notebooks, its committed table captions and its library's
    strings."""
    tables = root / "figures" / "tables"
    return (check_sources(notebook_prose(root / "notebooks")) + check_sources(caption_prose(tables))
            + caption_numbers(tables) + check_sources(library_prose(root / "reg2rg_lib")))


def main() -> int:
    """Print the kit's prose drift (exit status 1) or a line saying there is none."""
    problems = check_kit()
    print(
        "\n".join(problems)
        if problems
        else "no prose drift: every table, figure, run and rule named is defined"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
