"""The package's shape: imports run down the pipeline, no import cycles, a small root, functions that fit a
screen, and a module over 400 lines says in its docstring why it is one file.

reg2rg_lib is cut by pipeline stage (see README.md, Layout). A module may import its own stage and the stages
before it, never a later one, so that each stage can be read, tested and replaced without the ones after it.
The checker reads the source with `ast` (nothing is imported), so an import inside a function counts as much
as one at the top of the file.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "reg2rg_lib"
# the pipeline order: "base" is the modules at the package root, then one subpackage per stage
STAGES = (
    "base",
    "env",
    "data",
    "model",
    "samples",
    "train",
    "infer",
    "metrics",
    "experiments",
    "report",
    "explore",
    "nbtools",
    "bench",
    "cli",
)
#: Stages that must not import a given earlier stage: inference runs a saved model on samples, without
#: training code (what both need lives in samples/ or, for file names, in paths.py).
FORBIDDEN = {"infer": ("train",)}
ROOT_EXEMPT = {"__init__", "_version"}  # not counted towards the root's size
MAX_ROOT_MODULES = 7
MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 400
#: What a longer module's docstring says, in a sentence of its own: "One file over 400 lines: <why this is one
#: job that does not split well>".
LONG_MODULE_REASON = "One file over"


@dataclass(frozen=True)
class Module:
    """One source file: its dotted name, its path relative to the package's parent, and its stage."""

    name: str
    path: Path
    rel: str
    stage: str
    is_init: bool


@dataclass(frozen=True)
class Import:
    """One import statement's target inside the package, resolved to a module name."""

    source: Module
    target: str
    line: int
    text: str


def modules(root: Path, stages: Sequence[str]) -> dict[str, Module]:
    """Every .py file under `root`, keyed by dotted module name; a file outside any stage gets the stage
    "?"."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        is_init = parts[-1] == "__init__"
        if is_init:
            parts.pop()
        inner = parts[1:]  # below the package itself
        if not inner or (len(inner) == 1 and not is_init):
            stage = "base"
        else:
            stage = inner[0] if inner[0] in stages else "?"
        name = ".".join(parts)
        found[name] = Module(name, path, path.relative_to(root.parent).as_posix(), stage, is_init)
    return found


def _absolute(module: Module, node: ast.ImportFrom) -> str:
    """The absolute module a `from ... import` names, resolving leading dots against the importing file."""
    if not node.level:
        return node.module or ""
    package = module.name.split(".") if module.is_init else module.name.split(".")[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _resolve(name: str, known: dict[str, Module]) -> str | None:
    """The longest known module that `name` lies in (an attribute of a module resolves to the module)."""
    parts = name.split(".")
    while parts:
        if ".".join(parts) in known:
            return ".".join(parts)
        parts.pop()
    return None


def imports(known: dict[str, Module]) -> Iterator[Import]:
    """Every import, anywhere in every file, whose target is a module of the package."""
    for module in known.values():
        source = module.path.read_text(encoding="utf-8")
        for node in ast.walk(ast.parse(source, filename=str(module.path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                origin = _absolute(module, node)
                # `from pkg import name`: `name` may be a submodule, else it is an attribute of `pkg`
                targets = [f"{origin}.{alias.name}" for alias in node.names]
            else:
                continue
            text = ast.get_source_segment(source, node) or ast.dump(node)
            for target in targets:
                resolved = _resolve(target, known)
                if resolved is not None and resolved != module.name:
                    yield Import(module, resolved, node.lineno, " ".join(text.split()))


def dependencies(known: dict[str, Module]) -> list[Import]:
    """The imports that are dependencies: a package's __init__ re-exporting its own stage's children is not
    one."""
    deps = []
    for imp in imports(known):
        target = known[imp.target]
        own_child = imp.source.is_init and imp.target.startswith(imp.source.name + ".")
        if own_child and target.stage == imp.source.stage:
            continue
        deps.append(imp)
    return deps


def upward_imports(known: dict[str, Module], stages: Sequence[str]) -> list[str]:
    """(a) `file:line: import` for each import of a later stage, and each file that belongs to no stage."""
    order = {stage: i for i, stage in enumerate(stages)}
    problems = [
        f"{m.rel}: not in any stage (stages: {', '.join(stages)})" for m in known.values() if m.stage == "?"
    ]
    for imp in dependencies(known):
        src, dst = imp.source.stage, known[imp.target].stage
        if src in order and dst in order and order[dst] > order[src]:
            problems.append(f"{imp.source.rel}:{imp.line}: `{imp.text}` imports stage {dst} from stage {src}")
    return problems


def forbidden_imports(known: dict[str, Module], forbidden: dict[str, Sequence[str]]) -> list[str]:
    """(a') `file:line: import` for each import from a stage into one that `forbidden` keeps it apart from."""
    problems = []
    for imp in dependencies(known):
        src, dst = imp.source.stage, known[imp.target].stage
        if dst in forbidden.get(src, ()):
            problems.append(
                f"{imp.source.rel}:{imp.line}: `{imp.text}` imports stage {dst} from stage {src}, "
                f"which stays independent of it"
            )
    return problems


def private_imports(known: dict[str, Module]) -> list[str]:
    """(a'') `file:line: import` for each import of another module's private name (`_name`, not a dunder):
    what a module shares with others is public and documented there."""
    problems = []
    for module in known.values():
        source = module.path.read_text(encoding="utf-8")
        for node in ast.walk(ast.parse(source, filename=str(module.path))):
            if not isinstance(node, ast.ImportFrom):
                continue
            origin = _resolve(_absolute(module, node), known)
            if origin is None or origin == module.name:
                continue
            private = [a.name for a in node.names if a.name.startswith("_") and not a.name.endswith("__")]
            if private:
                problems.append(f"{module.rel}:{node.lineno}: imports {', '.join(private)} from {origin}, "
                                "private to it")
    return sorted(problems)


def import_cycles(known: dict[str, Module]) -> list[str]:
    """(b) One line per import cycle between files, naming the files around it and the line of each import."""
    edges: dict[str, dict[str, Import]] = {name: {} for name in known}
    for imp in sorted(dependencies(known), key=lambda i: i.line):  # name each hop by its first import
        edges[imp.source.name].setdefault(imp.target, imp)
    problems = []
    for component in _strongly_connected(edges):
        start = min(component)
        cycle = _cycle_through(start, component, edges)
        hops = [edges[a][b] for a, b in zip(cycle, cycle[1:])]
        problems.append("import cycle: " + " -> ".join(f"{h.source.rel}:{h.line}" for h in hops)
                        + f" -> {known[start].rel}")
    return sorted(problems)


def _strongly_connected(edges: dict[str, dict[str, Import]]) -> list[set[str]]:
    """Tarjan's components with more than one file, or a file that imports itself."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1 or v in edges[v]:
                out.append(component)

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def _cycle_through(start: str, component: set[str], edges: dict[str, dict[str, Import]]) -> list[str]:
    """The shortest path start -> ... -> start inside one strongly connected component."""
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(edges[v]):
                if w not in component:
                    continue
                if w == start:  # walk back from v to start, then close the loop
                    path = [v]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [*reversed(path), start]
                if w not in previous:
                    previous[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"{start} is in a component but on no cycle")


def crowded_root(known: dict[str, Module]) -> list[str]:
    """(c) The root's modules, if there are more than MAX_ROOT_MODULES of them (besides __init__ and
    _version)."""
    root = [m for m in known.values() if m.stage == "base" and not m.is_init and m.name.count(".") == 1
            and m.name.rsplit(".", 1)[1] not in ROOT_EXEMPT]
    if len(root) <= MAX_ROOT_MODULES:
        return []
    names = ", ".join(sorted(m.path.name for m in root))
    return [f"{len(root)} modules at the package root (at most {MAX_ROOT_MODULES}): {names}"]


def long_functions(known: dict[str, Module]) -> list[str]:
    """(d) `file:line name (N lines)` for each function or method longer than MAX_FUNCTION_LINES."""
    problems = []
    for module in known.values():
        tree = ast.parse(module.path.read_text(encoding="utf-8"), filename=str(module.path))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    problems.append(f"{module.rel}:{node.lineno} {node.name} ({n} lines)")
    return sorted(problems)


def unexplained_long_modules(known: dict[str, Module], max_lines: int = MAX_MODULE_LINES) -> list[str]:
    """(e) `file (N lines)` for each module longer than `max_lines` whose module docstring does not say why it
    is one file (no sentence with LONG_MODULE_REASON)."""
    problems = []
    for module in known.values():
        source = module.path.read_text(encoding="utf-8")
        n = len(source.splitlines())
        docstring = ast.get_docstring(ast.parse(source, filename=str(module.path))) or ""
        if n > max_lines and LONG_MODULE_REASON not in docstring:
            problems.append(f"{module.rel} ({n} lines)")
    return sorted(problems)


def _report(problems: list[str]) -> str:
    return f"{len(problems)} problem(s):\n  " + "\n  ".join(problems)


@pytest.fixture(scope="module")
def package() -> dict[str, Module]:
    return modules(PACKAGE, STAGES)


def test_imports_run_down_the_pipeline(package):
    problems = upward_imports(package, STAGES)
    assert not problems, _report(problems)


def test_samples_sit_between_model_and_train():
    assert STAGES.index("model") < STAGES.index("samples") < STAGES.index("train") < STAGES.index("infer")


def test_inference_imports_nothing_from_training(package):
    problems = forbidden_imports(package, FORBIDDEN)
    assert not problems, _report(problems)


def test_no_module_imports_another_modules_private_names(package):
    problems = private_imports(package)
    assert not problems, _report(problems)


def test_no_import_cycle_between_files(package):
    problems = import_cycles(package)
    assert not problems, _report(problems)


def test_package_root_stays_small(package):
    problems = crowded_root(package)
    assert not problems, _report(problems)


def test_functions_fit_on_a_screen(package):
    problems = long_functions(package)
    assert not problems, _report(problems)


def test_long_modules_say_why_they_are_one_file(package):
    problems = [
        f"{p}: its module docstring gives no reason; add \"{LONG_MODULE_REASON} {MAX_MODULE_LINES} lines: "
        "<why this is one job>\", or split it"
        for p in unexplained_long_modules(package)
    ]
    assert not problems, _report(problems)


# --- the checker itself, on a fake package written to tmp_path


def _fake(tmp_path: Path, files: dict[str, str]) -> dict[str, Module]:
    """A package `fake` with the given files (relative path -> source) and empty __init__.py files around
    them."""
    root = tmp_path / "fake"
    for rel, source in {"__init__.py": "", **files}.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        for folder in [path.parent, *path.parent.parents]:
            if folder == root.parent:
                break
            (folder / "__init__.py").touch()
        path.write_text(source)
    return modules(root, STAGES)


def test_checker_passes_a_clean_package(tmp_path):
    known = _fake(tmp_path, {
        "errors.py": "class KitError(Exception): ...\n",
        "data/__init__.py": "from fake.data.layout import scan\n",  # a package re-exporting its own children
        "data/layout.py": "from fake.errors import KitError\n\ndef scan():\n    from . import synth\n",
        "data/synth.py": "from ..errors import KitError\n",
        "model/net.py": "import fake.data.layout\nfrom fake.data import scan\n",
    })
    assert upward_imports(known, STAGES) == []
    assert import_cycles(known) == []
    assert crowded_root(known) == []
    assert long_functions(known) == []


def test_checker_names_an_upward_import_with_its_file_and_line(tmp_path):
    known = _fake(tmp_path, {
        "model/net.py": "x = 1\n",
        "data/layout.py": "import os\n\ndef load():\n    from fake.model.net import x\n    return x\n",
        "data/prep.py": "from ..model import net\n",  # relative imports resolve too
        "errors.py": "from fake.cli.main import run\n",
        "cli/main.py": "def run(): ...\n",
        "extras/misc.py": "",
    })
    problems = upward_imports(known, STAGES)
    assert (
        "fake/data/layout.py:4: `from fake.model.net import x` imports stage model from stage data"
        in problems
    )
    assert "fake/data/prep.py:1: `from ..model import net` imports stage model from stage data" in problems
    assert "fake/errors.py:1: `from fake.cli.main import run` imports stage cli from stage base" in problems
    assert any(p.startswith("fake/extras/misc.py: not in any stage") for p in problems)
    assert len([p for p in problems if "imports stage" in p]) == 3  # `import os` and downward imports pass


def test_checker_names_a_forbidden_import(tmp_path):
    known = _fake(tmp_path, {
        "train/loop.py": "x = 1\n",
        "samples/device.py": "y = 2\n",
        "infer/gen.py": "from fake.samples.device import y\n\ndef run():\n    from fake.train import loop\n",
    })
    assert upward_imports(known, STAGES) == []  # train comes before infer: allowed by the order alone
    assert forbidden_imports(known, FORBIDDEN) == [
        "fake/infer/gen.py:4: `from fake.train import loop` imports stage train from stage infer, "
        "which stays independent of it"]


def test_checker_names_an_import_of_a_private_name(tmp_path):
    known = _fake(tmp_path, {
        "infer/decoder.py": "def _step(): ...\ndef step(): ...\n",
        "infer/beam.py": "from fake.infer.decoder import _step, step\nfrom .decoder import step as _own\n",
        "_version.py": "__version__ = '1'\n",
        "errors.py": "from fake._version import __version__\n",
    })
    assert private_imports(known) == [
        "fake/infer/beam.py:1: imports _step from fake.infer.decoder, private to it"]


def test_checker_reports_an_import_cycle_between_files(tmp_path):
    known = _fake(tmp_path, {
        "data/a.py": "from fake.data.b import y\nx = 1\n",
        "data/b.py": "def f():\n    from fake.data.c import z\ny = 2\n",
        "data/c.py": "import fake.data.a\nz = 3\n",
        "data/d.py": "from fake.data import a\n",  # leads into the cycle, not part of it
    })
    assert import_cycles(known) == [
        "import cycle: fake/data/a.py:1 -> fake/data/b.py:2 -> fake/data/c.py:1 -> fake/data/a.py"]


def test_checker_reports_a_crowded_root(tmp_path):
    root_files = {f"m{i}.py": "" for i in range(MAX_ROOT_MODULES)}
    assert crowded_root(_fake(tmp_path / "ok", {**root_files, "_version.py": ""})) == []
    problems = crowded_root(_fake(tmp_path / "full", {**root_files, "extra.py": ""}))
    assert len(problems) == 1 and problems[0].startswith(
        f"{MAX_ROOT_MODULES + 1} modules at the package root"
    )


def test_checker_reports_a_long_function_by_file_line_and_name(tmp_path):
    def body(n: int, indent: str) -> str:  # n - 1 statements: with its def line, a function of n lines
        return "".join(f"{indent}x = 0\n" for _ in range(n - 1))

    source = (f"import os\n\n\ndef short():\n{body(MAX_FUNCTION_LINES, '    ')}\n\n"
              f"class C:\n    def long(self):\n{body(MAX_FUNCTION_LINES + 1, '        ')}")
    line = source.splitlines().index("    def long(self):") + 1
    assert long_functions(_fake(tmp_path, {"data/a.py": source})) == [
        f"fake/data/a.py:{line} long ({MAX_FUNCTION_LINES + 1} lines)"]


def test_checker_reports_a_long_module_without_a_reason(tmp_path):
    body = "x = 0\n" * MAX_MODULE_LINES
    known = _fake(tmp_path, {
        "data/short.py": '"""At the limit."""\n' + "x = 0\n" * (MAX_MODULE_LINES - 1),
        "data/why.py": f'"""Long.\n\n{LONG_MODULE_REASON} {MAX_MODULE_LINES} lines: one job."""\n' + body,
        "data/long.py": '"""Long, and nothing says why."""\n' + body,
        "data/comment.py": f"# {LONG_MODULE_REASON} {MAX_MODULE_LINES} lines: not in the docstring\n" + body,
    })
    n = MAX_MODULE_LINES + 1
    assert unexplained_long_modules(known) == [
        f"fake/data/comment.py ({n} lines)", f"fake/data/long.py ({n} lines)"
    ]
