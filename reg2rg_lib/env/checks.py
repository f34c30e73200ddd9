"""`Check`: one line of the `reg2rg doctor` report (what was checked, whether it is fine, how to fix it).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True
