"""Progress events: one JSON object per line in RUN_DIR/events.jsonl (and stdout with --json).

Every event has "event" (start, progress, sample, checkpoint, done, stopped, error), "step"
and "time"; progress events add loss (L_simple), bucket_loss (10 buckets of t, null where empty),
lr, images_per_s and eta_s, and with a learned variance loss_vlb (the window's mean of T·L_t in
bits/dim, training/vlb.py); sample events add sample_grid (the EMA weights' grid),
raw_sample_grid (the raw weights', same prompts and seed), prompts and grid_columns (prompt i
is at row i // grid_columns, column i % grid_columns); checkpoint events add checkpoint;
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

from diffusion_studio.errors import UsageError

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
    """Appends events to a JSONL file, optionally echoes them to a stream, and calls listeners.

    If the file cannot be opened or written (a full disk), UsageError says so in one sentence;
    the event still reaches the echo stream and the listeners, and the file is not written again.
    """

    def __init__(self, path: Path | None, echo: TextIO | None = None,
                 listeners: list[EventCallback] | None = None) -> None:
        self.path = path
        self.echo = echo
        self.listeners = list(listeners or [])
        try:
            self._fh = open(path, "a", encoding="utf-8") if path is not None else None
        except OSError as exc:
            raise UsageError(f"Cannot write the training log {path} ({exc.strerror or exc}).") from None

    def emit(self, event: str, *, best_effort: bool = False, **fields: Any) -> dict[str, Any]:
        """Log one event; with best_effort a failed file write is not raised (used for "error")."""
        record = _json_safe({"event": event, "time": round(time.time(), 3), **fields})
        line = json.dumps(record, allow_nan=False)
        failure = None
        if self._fh is not None:
            try:
                self._fh.write(line + "\n")
                self._fh.flush()
            except OSError as exc:
                failure = UsageError(f"Cannot write the training log {self.path} ({exc.strerror or exc}).")
                self.close()
        if self.echo is not None:
            self.echo.write(line + "\n")
            self.echo.flush()
        for listener in self.listeners:
            listener(record)
        if failure is not None and not best_effort:
            raise failure
        return record

    def close(self) -> None:
        fh, self._fh = self._fh, None
        if fh is not None:
            try:
                fh.close()
            except OSError:  # the last buffered line could not be written (a full disk)
                pass


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
