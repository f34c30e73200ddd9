"""CTRG-Chest-548K conventions: the "other report" and the prompt sentence that asks for it.

In CTRG-Chest-548K the region masks come from an automatic segmentation, so some report text belongs to a
region that has no mask in that case, or to no region at all. Reg2RG's released CTRG outputs keep that text in
a trailing block after the numbered region paragraphs:

    The region 0 is heart: ... The region 1 is lung: ...
    The other report is: {mediastinum: ...}{pleura: ...}{other: ...}

and the prompt ends with one more sentence asking for it (`PROMPT_SUFFIX`). `prepare(..., dataset="ctrg")`
fills `CaseRecord.other` with those blocks (regions in canonical order, then "other", which is always present,
possibly empty); `other_report` writes the block text. Parsing generated reports back is
`reg2rg_lib.regions`'s job.
"""

from __future__ import annotations

from collections.abc import Mapping

#: the sentence the CTRG prompt adds after the region-report instruction (released `Question` column)
PROMPT_SUFFIX = (
    "For those reports that have no specific region associated with them, generate an 'other report' "
    "at the end."
)
OTHER_PREFIX = "The other report is: "


def other_report(blocks: Mapping[str, str]) -> str:
    """`The other report is: {name: text}{...}` for the blocks in the given order; "" when there are none."""
    if not blocks:
        return ""
    return OTHER_PREFIX + "".join(f"{{{name}: {text}}}" for name, text in blocks.items())
