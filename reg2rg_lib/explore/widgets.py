"""The ipywidgets explorer: CT slices with region overlays beside the region-split reports, linked both ways.

Layout (one `Explorer.widget`):

    case | plane | window | focus region            <- controls
    slice slider
    [ CT slice with overlays ] [ region toggles ]    <- image panel (PNG rendered by `explore.view`)
    report grid: region button | ground truth | prediction A (diff) | prediction B (diff)
    per-case metrics | labeler findings

Every interaction goes through one method (`set_case`, `set_plane`, `set_slice`, `set_window`,
`toggle_region`, `select_region`, `show_finding`); the widgets' observers only call those. Tests drive the
same methods, or click the buttons with `Button.click()`, and read `image.value` and the report cells without
a browser. Selecting a region (its paragraph button, or the focus dropdown) outlines its mask, jumps to the
slice through it where the mask is largest, and highlights its paragraph in every report column.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from ipywidgets import (
    HTML,
    Button,
    Checkbox,
    Dropdown,
    HBox,
    Image,
    IntSlider,
    Layout,
    ToggleButtons,
    VBox,
    Widget,
)

from reg2rg_lib.data import slices as view
from reg2rg_lib.explore import paragraphs as rep
from reg2rg_lib.explore.case_scores import case_summary_html
from reg2rg_lib.explore.case_sources import Explorable, ExploreCase
from reg2rg_lib.explore.locate import finding_centre, finding_regions
from reg2rg_lib.explore.snapshot import snapshot_png
from reg2rg_lib.regions import REGION_COLORS

GT = "gt"  # the source key of the ground-truth column
_NONE = "(none)"


def _close(widgets: tuple[Widget, ...]) -> None:
    """Close widgets and their children (rebuilt on every case change; open ones would pile up in the
    kernel)."""
    for widget in widgets:
        _close(getattr(widget, "children", ()))
        widget.close()


def text_color_for(background: str) -> str:
    """Black or white, whichever reads better on `background` (relative luminance)."""
    r, g, b = (int(background.lstrip("#")[i : i + 2], 16) for i in (0, 2, 4))
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 150 else "white"


class Explorer:
    """Interactive viewer of one dataset's cases with their ground-truth and predicted reports.

    `data` is an `Explorable` (dataset + prediction files); `case` picks the first case shown (default: the
    first case with predictions). The image is `longest` pixels on its long side.
    """

    def __init__(self, data: Explorable, case: str | None = None, longest: int = 384) -> None:
        self.data = data
        self.longest = longest
        names = data.names()
        if not names:
            raise ValueError("the dataset has no cases to explore")
        self.case: ExploreCase | None = None
        self.state = view.ViewState()
        self._syncing = False

        self.case_picker = Dropdown(options=names, description="case", layout=Layout(width="260px"))
        self.plane_picker = ToggleButtons(options=list(view.PLANES), description="plane",
                                            style={"button_width": "80px"})
        self.window_picker = ToggleButtons(options=list(view.WINDOWS), value=self.state.window,
                                             description="window", style={"button_width": "95px"})
        self.focus_picker = Dropdown(options=[_NONE], description="focus", layout=Layout(width="260px"))
        self.slice_slider = IntSlider(min=0, max=1, description="slice", continuous_update=True,
                                        layout=Layout(width="520px"))
        self.image = Image(format="png", layout=Layout(border="1px solid #ccc"))
        self.caption = HTML()
        self.overlay_box = VBox(layout=Layout(min_width="190px"))
        self.report_box = VBox(layout=Layout(flex="1 1 600px"))
        self.summary = HTML()
        self.notice = HTML()
        self.overlay_toggles: dict[str, Checkbox] = {}
        self.paragraph_buttons: dict[str, Button] = {}
        self.cells: dict[tuple[str, str], HTML] = {}  # (region, source) -> paragraph cell

        self.case_picker.observe(lambda ch: self._from_widget(self.set_case, ch["new"]), names="value")
        self.plane_picker.observe(lambda ch: self._from_widget(self.set_plane, ch["new"]), names="value")
        self.window_picker.observe(lambda ch: self._from_widget(self.set_window, ch["new"]), names="value")
        self.slice_slider.observe(lambda ch: self._from_widget(self.set_slice, ch["new"]), names="value")
        self.focus_picker.observe(
            lambda ch: self._from_widget(self.select_region, None if ch["new"] == _NONE else ch["new"]),
            names="value",
        )
        controls = VBox([
            HBox([self.case_picker, self.focus_picker]),
            self.plane_picker, self.window_picker, self.slice_slider,
        ])
        image_panel = VBox([HBox([self.image, self.overlay_box]), self.caption])
        self.widget = VBox(
            [
                controls,
                self.notice,
                HBox(
                    [image_panel, self.report_box],
                    layout=Layout(flex_flow="row wrap", align_items="flex-start"),
                ),
                self.summary,
            ]
        )
        self.set_case(case if case is not None else names[0])

    # ---- state changes (the widgets' observers call these; so do the tests) ----

    def set_case(self, name: str) -> None:
        """Load case `name`: all its region overlays on, nothing selected, the middle slice of each plane."""
        self.case = self.data.load(name)
        self.state = view.ViewState(plane=self.state.plane, window=self.state.window,
                                    visible=view.default_visible(self.case.masks))
        self.columns = [GT, *self.case.predictions]
        self.gt_paragraphs = rep.paragraphs(self.case.gt_report)
        self.pred_paragraphs = {src: rep.paragraphs(t) for src, t in self.case.predictions.items()}
        self.rows = {src: rep.align(self.gt_paragraphs, ps) for src, ps in self.pred_paragraphs.items()}
        self.regions = rep.region_order(self.gt_paragraphs, *self.pred_paragraphs.values(),
                                        [rep.Paragraph(-1, r, "") for r in self.case.masks])
        with self._quiet():
            self.case_picker.value = name
            self.focus_picker.options = [_NONE, *self.regions]
            self.focus_picker.value = _NONE
        self._build_overlays()
        self._build_report()
        self.notice.value = (
            ""
            if self.case.predictions
            else (
                '<div style="color:#8a6d00;background:#fff8e1;padding:4px 8px">No predictions for this '
                "case: showing "
                + (
                    "the ground truth only (the predictions files do not cover it)."
                    if self.data.prediction_files
                    else "the ground truth only (no predictions file: run notebooks 03-04 to make "
                    "<code>runs/full/predictions.csv</code>)."
                )
                + "</div>"
            )
        )
        self.summary.value = case_summary_html(self.case)
        self._refresh_image()

    def set_plane(self, plane: str) -> None:
        self.state = replace(self.state, plane=view.check_plane(plane))
        self._refresh_image()

    def set_window(self, preset: str) -> None:
        if preset not in view.WINDOWS:
            raise ValueError(f"unknown window {preset!r}; expected one of {', '.join(view.WINDOWS)}")
        self.state = replace(self.state, window=preset)
        self._refresh_image()

    def set_slice(self, index: int) -> None:
        self.state = self.state.with_index(self.state.plane, index)
        self._refresh_image()

    def toggle_region(self, region: str, on: bool) -> None:
        """Show or hide `region`'s mask overlay."""
        visible = set(self.state.visible)
        (visible.add if on else visible.discard)(region)
        self.state = replace(self.state, visible=frozenset(visible))
        self._refresh_image()

    def select_region(self, region: str | None) -> None:
        """Focus `region` (None clears): outline its mask, jump to its largest slice, highlight its
        paragraphs."""
        assert self.case is not None
        self.state = replace(self.state, selected=region)
        if region is not None and region in self.case.masks:
            self.state = self.state.with_index(self.state.plane, view.best_slice(self.case.masks[region],
                                                                                 self.state.plane))
        self._refresh_report()
        self._refresh_image()

    def show_finding(self, region: str | None = None) -> str | None:
        """Open on a ground-truth finding: focus `region` (None: the first region whose ground-truth paragraph
        states a finding, `locate.finding_regions`) and go to the slice through the finding
        (`locate.finding_centre`), or, when none is seen in the image, to the slice where the region is
        largest. Returns the region focused."""
        assert self.case is not None
        if region is None:
            region = next((r for r in finding_regions(self.case.gt_report) if r in self.case.masks), None)
        self.select_region(region)
        if region is not None and region in self.case.masks:
            centre = finding_centre(self.case.volume, self.case.masks[region], self.case.spacing)
            if centre is not None:
                self.set_slice(centre[view.PLANES[self.state.plane]])
        return region

    def highlighted(self) -> list[tuple[str, str]]:
        """The (region, source) cells currently highlighted in the report grid."""
        return [key for key, cell in self.cells.items() if 'data-selected="true"' in cell.value]

    def snapshot(self, path: str | os.PathLike[str]) -> Path:
        """Write a static PNG of the current view (image + report columns) to `path`; see
        `explore.snapshot`."""
        return snapshot_png(self, path)

    # ---- rendering ----

    def render(self) -> bytes:
        """PNG bytes of the current image view."""
        assert self.case is not None
        rgb = view.render_slice(
            self.case.volume, self.case.masks, self.state, self.case.spacing, self.longest
        )
        return view.to_png(rgb)

    def _refresh_image(self) -> None:
        assert self.case is not None
        n = self.case.volume.shape[view.PLANES[self.state.plane]]
        index = self.state.slice_index(self.case.volume.shape)
        with self._quiet():
            self.plane_picker.value = self.state.plane
            self.window_picker.value = self.state.window
            self.slice_slider.max = n - 1
            self.slice_slider.value = index
            self.focus_picker.value = self.state.selected or _NONE
            for region, box in self.overlay_toggles.items():
                box.value = region in self.state.visible
        self.image.value = self.render()
        here = view.regions_in_slice(self.case.masks, self.state.plane, index)
        focus = ""
        if self.state.selected and self.state.selected not in self.case.masks:
            focus = f" &middot; <b>no mask for {self.state.selected} in this case</b>"
        self.caption.value = (
            f'<span style="font-size:12px">{self.case.name} &middot; {self.state.plane} slice {index} / '
            f"{n - 1} "
            f"&middot; window {self.state.window}{focus}<br>in this slice: "
            f"{', '.join(here) or 'no region'}</span>"
        )

    def _build_overlays(self) -> None:
        assert self.case is not None
        _close(self.overlay_box.children)  # the previous case's toggles: free their front-end models
        self.overlay_toggles = {}
        for region in self.case.masks:
            box = Checkbox(value=True, description=region, indent=False,
                             style={"background": rep.tint(REGION_COLORS.get(region, "#888888"), 0.45)},
                             layout=Layout(width="180px", margin="1px 0"))
            box.observe(
                lambda ch, r=region: self._from_widget(self.toggle_region, r, ch["new"]), names="value"
            )
            self.overlay_toggles[region] = box
        self.overlay_box.children = [HTML("<b>overlays</b>"), *self.overlay_toggles.values()]

    def _build_report(self) -> None:
        """One row per region: a button (select) and one cell per column, so rows line up across columns."""
        assert self.case is not None
        _close(self.report_box.children)
        titles = {GT: "ground truth", **{s: f"prediction: {s}" for s in self.case.predictions}}
        header = HBox([HTML(layout=Layout(width="150px"))] + [
            HTML(f"<b>{titles[c]}</b>", layout=Layout(flex="1 1 0", min_width="220px")) for c in self.columns
        ])
        self.paragraph_buttons, self.cells, rows = {}, {}, [header]
        for region in self.regions:
            color = REGION_COLORS.get(region, "#888888")
            button = Button(description=region, tooltip=f"show {region}", layout=Layout(width="150px"),
                              style={"button_color": color, "text_color": text_color_for(color)})
            button.on_click(lambda _b, r=region: self.select_region(None if self.state.selected == r else r))
            self.paragraph_buttons[region] = button
            cells = []
            for col in self.columns:
                cell = HTML(layout=Layout(flex="1 1 0", min_width="220px"))
                self.cells[(region, col)] = cell
                cells.append(cell)
            rows.append(HBox([button, *cells], layout=Layout(align_items="flex-start")))
        self.report_box.children = rows
        self._refresh_report()

    def _refresh_report(self) -> None:
        for (region, col), cell in self.cells.items():
            selected = region == self.state.selected
            if col == GT:
                gt = next((p for p in self.gt_paragraphs if p.region == region), None)
                whole = (
                    region == rep.WHOLE_REPORT
                    and gt is None
                    and any(
                        rows.get(region) is not None and rows[region].gt is not None
                        for rows in self.rows.values()
                    )
                )
                row = rep.Row(region, gt, None, note=rep.GT_WHOLE_NOTE if whole else None)
            else:
                row = self.rows[col].get(region) or rep.Row(region, None, None)
                if row.gt is None and row.pred is None:
                    cell.value = rep.cell_html(rep.Row(region, None, None), GT, selected)
                    continue
            cell.value = rep.cell_html(row, col, selected)

    # ---- plumbing ----

    @contextlib.contextmanager
    def _quiet(self) -> Iterator[None]:
        """Update widget values from the state without their observers feeding back into the state."""
        before, self._syncing = self._syncing, True
        try:
            yield
        finally:
            self._syncing = before

    def _from_widget(self, method, *args) -> None:  # noqa: ANN001 - a bound state-change method
        if not self._syncing:
            method(*args)
