"""What every `reg2rg bench ...` shares: printing its figures as an aligned table or, with `--json`, one JSON line.
"""

from __future__ import annotations

import json
from typing import Any


def report(figures: dict[str, Any], as_json: bool) -> int:
    """Print `figures` (one JSON line with --json, else an aligned table); returns 0."""
    if as_json:
        print(json.dumps(figures, default=float))
        return 0
    width = max(map(len, figures)) if figures else 0
    for key, value in figures.items():
        shown = f"{value:.4g}" if isinstance(value, float) else value
        print(f"{key:<{width}}  {shown}")
    return 0
