"""Text shared by the workspaces' views: durations for progress bars and status lines."""

from __future__ import annotations

import math


def format_seconds(seconds: float) -> str:
    """"4.2 s" under a minute, "3 min 07 s" above; "…" while unknown (NaN or infinite)."""
    if not math.isfinite(seconds):
        return "…"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s"
