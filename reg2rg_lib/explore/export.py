"""The executed explorer notebook as a kernel-less web page, and a look at that page in a real browser.

Executing a notebook with papermill (nbclient underneath, `store_widget_state=True` by default) records every
widget's final state in the notebook's metadata (`metadata.widgets`, mime type
`application/vnd.jupyter.widget-state+json`); nbconvert's HTML export embeds that state, and the page's widget
renderer (`@jupyter-widgets/html-manager`, with require.js) draws the widgets from it without a kernel: the
explorer appears as it was left, image included.

By default that renderer is loaded from a CDN. This module exports with a local copy instead, so the page
works
offline: the two npm packages are fetched once with `npm pack` (the npm registry's own client), checked
against pinned SHA-256 sums, unpacked under the asset folder, and copied next to the HTML.

    python -m reg2rg_lib.explore.export --notebook outputs/demo/notebooks/07_explore.ipynb \
        --png outputs/demo/explorer_screenshot.png        # what `make screenshot` runs (needs chromium, npm)
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from reg2rg_lib.env.assets import asset_dir, sha256_file
from reg2rg_lib.errors import BadInputError, KitError
from reg2rg_lib.io import atomic_path, write_text_atomic

logger = logging.getLogger(__name__)

WIDGET_STATE_MIME = "application/vnd.jupyter.widget-state+json"
#: npm package -> (version, sha256 of the `npm pack` tarball, file the page loads, relative to the package
#: root)
JS_PACKAGES: dict[str, tuple[str, str, str]] = {
    "@jupyter-widgets/html-manager": (
        "1.0.15", "2b9d65cb7913e1c7d671757a10008b32c9c2448d4429513371e55c07d6107638", "dist/embed-amd.js",
    ),
    "requirejs": ("2.3.8", "777158e89275e16bd51aec3ef714fbcb5dc45789e7078659933bc814916d7dec", "require.js"),
}
#: Chromium flags for a quiet, isolated, offline-friendly headless run.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars")


def _folder(package: str) -> str:
    return package.replace("@", "").replace("/", "-")


def fetch_js(root: Path | None = None, quiet: bool = False) -> dict[str, Path]:
    """Unpacked, verified copies of `JS_PACKAGES` under `<assets>/js/`; {package: its folder}. Idempotent."""
    root = (root or asset_dir()) / "js"
    out = {}
    for package, (version, digest, entry) in JS_PACKAGES.items():
        folder = root / f"{_folder(package)}-{version}"
        if not (folder / entry).is_file():
            if shutil.which("npm") is None:
                raise KitError("npm not found: it fetches the offline widget renderer (apt-get install npm)")
            with tempfile.TemporaryDirectory() as tmp:
                if not quiet:
                    logger.info(f"[export] npm pack {package}@{version}")
                res = subprocess.run(["npm", "pack", f"{package}@{version}", "--silent"], cwd=tmp,
                                     capture_output=True, text=True)
                tarballs = list(Path(tmp).glob("*.tgz"))
                if res.returncode != 0 or len(tarballs) != 1:
                    raise KitError(f"npm could not fetch {package}@{version}: {res.stderr.strip()[-300:]}")
                if sha256_file(tarballs[0]) != digest:
                    raise KitError(
                        f"{package}@{version}: checksum mismatch (expected sha256 {digest[:12]}...)"
                    )
                with tarfile.open(tarballs[0]) as tf:
                    tf.extractall(Path(tmp) / "x", filter="data")
                folder.parent.mkdir(parents=True, exist_ok=True)
                shutil.rmtree(folder, ignore_errors=True)
                # npm tarballs keep everything in package/
                shutil.move(str(Path(tmp) / "x" / "package"), folder)
        out[package] = folder
    return out


def widget_state(notebook: str | os.PathLike[str]) -> dict:
    """The widget models saved in an executed notebook ({model id: state}); empty if none were saved."""
    # nbformat, nbconvert: slow to import; only the notebook export needs them
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    return dict(nb.metadata.get("widgets", {}).get(WIDGET_STATE_MIME, {}).get("state", {}))


def export_html(notebook: str | os.PathLike[str], out_html: str | os.PathLike[str], offline: bool = True,
                include_input: bool = True) -> Path:
    """Export an executed notebook to HTML with its widget state; `offline` copies the renderer next to it.

    Raises `BadInputError` when the notebook has no saved widget state (not executed, or executed by a client
    that does not store it), since the page would then show no explorer.
    """
    # nbformat, nbconvert: slow to import; only the notebook export needs them
    from nbconvert import HTMLExporter

    notebook, out_html = Path(notebook), Path(out_html)
    if not notebook.is_file():
        raise BadInputError(notebook, "executed notebook not found (run `make reproduce` or "
                                      "`reg2rg run-notebooks --only 07` first)")
    if not widget_state(notebook):
        raise BadInputError(notebook, "no widget state saved in the notebook's metadata")
    options: dict[str, object] = {"template_name": "lab", "exclude_input": not include_input,
                                  "exclude_input_prompt": not include_input, "exclude_output_prompt": True}
    if offline:
        js = out_html.parent / f"{out_html.stem}_files"
        urls = []
        for package, src in fetch_js().items():
            entry = Path(JS_PACKAGES[package][2])
            dest = js / src.name / entry
            # copy the entry's folder: the renderer loads its fonts and chunks from there
            if not dest.is_file():
                if entry.parent != Path("."):
                    shutil.copytree(src / entry.parent, dest.parent, dirs_exist_ok=True)
                else:
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(src / entry, dest)
            urls.append(dest.relative_to(out_html.parent).as_posix())
        html_manager, requirejs = urls
        options.update(widget_renderer_url=html_manager, require_js_url=requirejs, mathjax_url="")
    import nbformat

    body, _ = HTMLExporter(**options).from_notebook_node(nbformat.read(notebook, as_version=4))
    return write_text_atomic(out_html, body)


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    raise KitError("chromium not found: install Debian's `chromium` package (apt-get install -y chromium)")


#: Widget views counted in the rendered page, by the CSS class the renderer gives their elements.
VIEW_CLASSES: tuple[str, ...] = ("widget-image", "widget-button", "widget-slider", "widget-html")


def _chromium(args: list[str], wait_ms: int) -> subprocess.CompletedProcess:
    """Run headless Chromium with a fresh profile; `wait_ms` of virtual time lets the page's scripts
    finish."""
    with tempfile.TemporaryDirectory() as profile:
        cmd = [
            find_chromium(),
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            f"--virtual-time-budget={wait_ms}",
            *args,
        ]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if res.returncode != 0:
        raise KitError(f"chromium failed ({res.returncode}): {res.stderr.strip()[-300:]}")
    return res


def rendered_views(html: str | os.PathLike[str], wait_ms: int = 15000) -> dict[str, int]:
    """How many widget views of each kind the page shows once its scripts ran (Chromium's `--dump-dom`).

    All zeros means the renderer did not run (e.g. it could not be loaded): the page shows no explorer.
    """
    dom = _chromium(["--dump-dom", Path(html).resolve().as_uri()], wait_ms).stdout
    classes = re.findall(r'class="([^"]*)"', dom)
    return {kind: sum(kind in c.split() for c in classes) for kind in VIEW_CLASSES}


def screenshot(html: str | os.PathLike[str], png: str | os.PathLike[str], width: int = 1600,
               height: int = 2400, wait_ms: int = 15000) -> Path:
    """Render `html` in headless Chromium (fresh profile) and save a PNG, trimmed of the empty page bottom."""
    html, png = Path(html).resolve(), Path(png)
    with atomic_path(png, suffix=".png") as tmp:
        _chromium([f"--window-size={width},{height}", f"--screenshot={tmp}", html.as_uri()], wait_ms)
        if tmp.stat().st_size == 0:
            raise KitError(f"chromium wrote no screenshot of {html}")
        img = Image.open(tmp).convert("RGB")
        rows = np.flatnonzero((np.asarray(img) < 250).any(axis=(1, 2)))  # rows with anything drawn
        if len(rows):
            img = img.crop((0, 0, img.width, min(img.height, int(rows[-1]) + 20)))
        img.save(tmp, format="PNG")
    return png


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Export the executed explorer notebook to HTML (offline widget "
                                             "renderer) and screenshot it in headless Chromium.")
    ap.add_argument(
        "--notebook", type=Path, required=True, help="executed notebook (e.g. OUT/notebooks/07_...)"
    )
    ap.add_argument("--png", type=Path, required=True, help="where to save the screenshot")
    ap.add_argument(
        "--html", type=Path, default=None, help="where to write the HTML (default: next to the PNG)"
    )
    ap.add_argument("--width", type=int, default=1600)
    ap.add_argument("--height", type=int, default=2400)
    args = ap.parse_args(argv)
    try:
        html = export_html(args.notebook, args.html or args.png.with_suffix(".html"), include_input=False)
        n = len(widget_state(args.notebook))
        png = screenshot(html, args.png, args.width, args.height)
        views = rendered_views(html)
    except KitError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    shown = ", ".join(f"{v} {k}" for k, v in views.items())
    print(f"[screenshot] {n} widget models saved in {args.notebook}\n  rendered without a kernel: {shown}\n"
          f"  html: {html}\n  png:  {png}  (look at it)")
    if not views["widget-image"]:
        print("error: the page shows no explorer image: the widget renderer did not run", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
