"""The papermill runner: executes the numbered notebooks in pipeline order with one profile.

Every notebook declares exactly one `parameters` cell with at least `profile`, `out_dir` and `figures_dir`;
the runner injects those three (plus any extra parameters) and writes the executed copies to
`<out>/notebooks/`.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reg2rg_lib.env.doctor import kernel_name
from reg2rg_lib.io import one_writer
from reg2rg_lib.paths import REPO_ROOT, RunPaths
from reg2rg_lib.profiles import load_profile

logger = logging.getLogger(__name__)

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
_NUMBERED = re.compile(r"^(\d\d)_[\w-]+\.ipynb$")


class NotebookFailed(RuntimeError):
    """A notebook raised; the message names the notebook and the failing cell."""

    def __init__(
        self, notebook: Path, cell_index: int | None, source: str, error: str, executed: Path
    ) -> None:
        first_line = source.strip().splitlines()[0] if source.strip() else "<empty cell>"
        where = f"cell {cell_index}" if cell_index is not None else "an unknown cell"
        super().__init__(
            f"{notebook.name} failed in {where} ({first_line[:80]!r}): {error}\n"
            f"  executed copy with the traceback: {executed}"
        )
        self.notebook, self.cell_index, self.executed = notebook, cell_index, executed


@dataclass(frozen=True)
class NotebookResult:
    notebook: Path
    executed: Path
    seconds: float


def discover(notebook_dir: Path = NOTEBOOK_DIR) -> list[Path]:
    """The numbered notebooks `NN_name.ipynb` in `notebook_dir`, in pipeline order."""
    found = sorted(p for p in Path(notebook_dir).glob("*.ipynb") if _NUMBERED.match(p.name))
    if not found:
        raise FileNotFoundError(f"no numbered notebooks (NN_name.ipynb) in {notebook_dir}")
    return found


def select(notebooks: Sequence[Path], only: Iterable[str] | None) -> list[Path]:
    """Keep the notebooks whose two-digit prefix is in `only` (`["01", "3"]`); unknown numbers are an
    error."""
    if not only:
        return list(notebooks)
    wanted = {f"{int(x):02d}" for x in only if str(x).strip()}
    by_number = {p.name[:2]: p for p in notebooks}
    missing = sorted(wanted - by_number.keys())
    if missing:
        raise ValueError(f"no notebook numbered {', '.join(missing)}; have {', '.join(sorted(by_number))}")
    return [p for p in notebooks if p.name[:2] in wanted]


@one_writer("out_dir", "run-notebooks")  # the notebooks' kernels write under this lock
def run_notebooks(
    profile: str,
    out_dir: str | Path,
    figures_dir: str | Path | None = None,
    only: Iterable[str] | None = None,
    parameters: Mapping[str, Any] | None = None,
    notebook_dir: str | Path = NOTEBOOK_DIR,
    cell_timeout_s: int | None = None,
    kernel: str | None = None,
    progress: bool = True,
) -> list[NotebookResult]:
    """Execute the selected notebooks in order; raise `NotebookFailed` at the first failure."""
    # papermill: slow to import (~2 s); only running notebooks needs it
    import papermill
    from papermill.exceptions import PapermillExecutionError

    prof = load_profile(profile)
    paths = RunPaths(out_dir)
    paths.notebooks.mkdir(parents=True, exist_ok=True)
    figures = Path(figures_dir).resolve() if figures_dir else paths.root / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    timeout = cell_timeout_s or prof.notebooks.cell_timeout_s
    params = {
        "profile": prof.name,
        "out_dir": str(paths.root),
        "figures_dir": str(figures),
        **(parameters or {}),
    }
    kernel = kernel or kernel_name()
    results = []
    for nb in select(discover(Path(notebook_dir)), only):
        executed = paths.notebooks / nb.name
        start = time.perf_counter()
        logger.info(f"[run-notebooks] {nb.name} (profile {prof.name}, kernel {kernel})")
        try:
            papermill.execute_notebook(
                str(nb),
                str(executed),
                parameters=params,
                kernel_name=kernel,
                language="python",
                execution_timeout=timeout,
                cwd=str(nb.parent),
                progress_bar=progress,
                log_output=False,
            )
        except PapermillExecutionError as err:
            raise NotebookFailed(
                nb, err.cell_index, err.source, f"{err.ename}: {err.evalue}", executed
            ) from None
        except Exception as err:  # kernel death, timeout, missing kernel: still name the notebook
            raise NotebookFailed(nb, None, "", f"{type(err).__name__}: {err}", executed) from None
        seconds = time.perf_counter() - start
        logger.info(f"[run-notebooks] {nb.name} done in {seconds:.1f} s -> {executed}")
        results.append(NotebookResult(nb, executed, seconds))
    return results
