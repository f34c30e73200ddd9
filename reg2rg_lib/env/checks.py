"""`reg2rg doctor`: what the kit needs, what is present, and how to get what is missing.

Checks are small functions registered in `CHECKS`; each returns a `Check`. Stages that need an offline asset
(the embedded CT, NLTK data, ...) add a check here so that one command tells a user what is missing.
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
