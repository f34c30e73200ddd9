"""Notebook hygiene: committed notebooks carry no outputs, exactly one `parameters`-tagged cell, and the kit's
one Jupyter kernel name (`env.doctor.KERNEL_NAME`) in their metadata.

    python -m reg2rg_lib.nbtools.hygiene notebooks            # check (exit 1 and list problems)
    python -m reg2rg_lib.nbtools.hygiene --strip notebooks    # remove outputs and execution counts in place
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

from reg2rg_lib.env.doctor import KERNEL_NAME


def problems(path: Path) -> list[str]:
    nb = nbformat.read(path, as_version=4)
    found = []
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(tagged) != 1:
        found.append(f"{path}: {len(tagged)} cells tagged 'parameters' (need exactly 1)")
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count") is not None):
            found.append(f"{path}: cell {i} has committed outputs or an execution count (run `make strip`)")
    kernel = nb.metadata.get("kernelspec", {}).get("name")
    if kernel != KERNEL_NAME:
        found.append(
            f"{path}: kernelspec name {kernel!r} (need {KERNEL_NAME!r}, the kernel `make setup` registers)"
        )
    if nb.cells and nb.cells[0].cell_type != "markdown":
        found.append(f"{path}: the first cell should be the markdown introduction")
    return found


def strip(path: Path) -> bool:
    nb = nbformat.read(path, as_version=4)
    changed = False
    for cell in nb.cells:
        if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count") is not None):
            cell.outputs, cell.execution_count, changed = [], None, True
    nb.metadata.pop("widgets", None)
    if changed:
        nbformat.write(nb, path)
    return changed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--strip", action="store_true")
    args = ap.parse_args(argv)
    paths = sorted(args.folder.glob("*.ipynb"))
    if args.strip:
        for p in paths:
            if strip(p):
                print(f"stripped {p}")
        return 0
    issues = [msg for p in paths for msg in problems(p)]
    print("\n".join(issues) if issues else f"{len(paths)} notebooks clean")
    return 1 if issues else 0


if __name__ == "__main__":
    sys.exit(main())
