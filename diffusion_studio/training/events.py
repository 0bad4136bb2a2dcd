"""Progress events: one JSON object per line in RUN_DIR/events.jsonl (and stdout with --json).

Every event has "event" (start, progress, sample, checkpoint, done, stopped, error), "step"
and "time"; progress events add loss, bucket_loss (10 buckets of t, null where empty),
lr, images_per_s and eta_s; sample events add sample_grid, checkpoint events checkpoint;
the final event has "done": true (or "error": sentence).
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

EventCallback = Callable[[dict[str, Any]], None]


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value


class EventLog:
    """Appends events to a JSONL file, optionally echoes them to a stream, and calls listeners."""

    def __init__(self, path: Path | None, echo: TextIO | None = None,
                 listeners: list[EventCallback] | None = None) -> None:
        self.path = path
        self.echo = echo
        self.listeners = list(listeners or [])
        self._fh = open(path, "a", encoding="utf-8") if path is not None else None

    def emit(self, event: str, **fields: Any) -> dict[str, Any]:
        record = _json_safe({"event": event, "time": round(time.time(), 3), **fields})
        line = json.dumps(record, allow_nan=False)
        if self._fh is not None:
            self._fh.write(line + "\n")
            self._fh.flush()
        if self.echo is not None:
            self.echo.write(line + "\n")
            self.echo.flush()
        for listener in self.listeners:
            listener(record)
        return record

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def read_events(path: Path) -> list[dict[str, Any]]:
    """All complete events of a run (a partly written last line is ignored)."""
    events = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events


def stdout_echo() -> TextIO:
    return sys.stdout
