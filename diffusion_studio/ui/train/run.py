"""A training run as the Train tab sees it, headless: the trainer's JSON events folded into
`TrainRun`, and exit codes and stderr turned into one sentence for the user.

The trainer writes one JSON event per line on stdout (training/events.py); the exporter's
summary lines are collected by `ExportSummary`. A run folder's checkpoints (`run_checkpoints`)
and sample grids (`latest_sample_grid`) are read here too, without torch.
"""

from __future__ import annotations

import datetime
import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

EVENT_KINDS = ("start", "progress", "sample", "checkpoint", "done", "stopped", "error")


def parse_event(line: str) -> dict[str, Any] | None:
    """One stdout line as an event dict, or None when it is not one of ours."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        event = json.loads(line)
    except json.JSONDecodeError:
        return None
    return event if isinstance(event, dict) and event.get("event") in EVENT_KINDS else None


@dataclass
class TrainRun:
    """Everything the workspace shows about one training process, folded from its events."""

    steps: int = 0
    step: int = 0
    start_step: int = 0
    parameters: int | None = None
    device: str = ""
    losses: list[tuple[int, float]] = field(default_factory=list)
    bucket_loss: list[float | None] = field(default_factory=list)
    lr: float | None = None
    images_per_s: float | None = None
    eta_s: float | None = None
    sample_grid: str | None = None  # the EMA weights' grid
    raw_sample_grid: str | None = None  # the raw weights' grid (None from runs that made none)
    sample_step: int | None = None
    sample_prompts: list[str] = field(default_factory=list)
    sample_columns: int | None = None  # prompt i is at row i // columns, column i % columns
    checkpoint: str | None = None
    outcome: str | None = None  # "done", "stopped" or "error" once the final event arrived
    error: str | None = None
    started_at: float | None = None  # monotonic time of the start event

    def apply(self, event: dict[str, Any], now: float | None = None) -> str:
        """Fold one event in (`now`: time.monotonic() when it arrived); returns its kind."""
        now = time.monotonic() if now is None else now
        kind = str(event.get("event"))
        if isinstance(event.get("step"), int):
            self.step = event["step"]
        if isinstance(event.get("steps"), int):
            self.steps = event["steps"]
        if kind == "start":
            self.start_step = self.step
            self.parameters = event.get("parameters")
            self.device = str(event.get("device", ""))
            self.started_at = now
        elif kind == "progress":
            loss = event.get("loss")
            if isinstance(loss, (int, float)) and math.isfinite(loss):
                self.losses.append((self.step, float(loss)))
            buckets = event.get("bucket_loss")
            if isinstance(buckets, list):
                self.bucket_loss = [float(b) if isinstance(b, (int, float)) else None for b in buckets]
            self.lr = event.get("lr", self.lr)
            self.images_per_s = event.get("images_per_s", self.images_per_s)
            self.eta_s = self._wall_clock_eta(now, event.get("eta_s", self.eta_s))
        elif kind == "sample" and event.get("sample_grid"):
            self.sample_grid, self.sample_step = str(event["sample_grid"]), self.step
            raw = event.get("raw_sample_grid")
            self.raw_sample_grid = str(raw) if raw else None
            prompts = event.get("prompts")
            self.sample_prompts = [str(p) for p in prompts] if isinstance(prompts, list) else []
            columns = event.get("grid_columns")
            self.sample_columns = columns if isinstance(columns, int) and columns > 0 else None
        elif kind == "checkpoint" and event.get("checkpoint"):
            self.checkpoint = str(event["checkpoint"])
        elif kind in ("done", "stopped"):
            self.outcome = kind
            if event.get("checkpoint"):
                self.checkpoint = str(event["checkpoint"])
            self.eta_s = 0.0 if kind == "done" else self.eta_s
        elif kind == "error":
            self.outcome = "error"
            self.error = str(event.get("error") or "unknown error")
        return kind


    def _wall_clock_eta(self, now: float, trainer_eta: float | None) -> float | None:
        """Remaining steps at the wall-clock pace since the start event.

        The trainer's own estimate counts only its updates; the time spent on sample grids,
        checkpoints and the first updates' warm-up is part of what the user waits for too.
        """
        done = self.step - self.start_step
        if self.started_at is None or done <= 0 or now <= self.started_at:
            return trainer_eta
        wall = (now - self.started_at) / done * max(0, self.steps - self.step)
        return max(wall, trainer_eta or 0.0)


NOISE_ROUGHNESS = 0.1  # mean |difference| of neighbouring pixels (0..1) above which a grid is noise


RAW_SUFFIX = "-raw"  # step-00000150-raw.png: the raw weights' grid (training/samples.py)


def sample_grid_path(run_dir: Path | str, step: int, raw: bool = False) -> Path:
    """RUN_DIR/samples/step-NNNNNNNN.png (EMA weights) or step-NNNNNNNN-raw.png (raw weights)."""
    return Path(run_dir) / "samples" / f"step-{step:08d}{RAW_SUFFIX if raw else ''}.png"


def latest_sample_grid(run_dir: Path | str, raw: bool = False) -> Path | None:
    """The run's newest EMA sample grid (RUN_DIR/samples/step-N.png), or raw one (step-N-raw.png), or None."""
    try:
        grids = [p for p in (Path(run_dir) / "samples").glob("step-*.png") if grid_step(p, raw) is not None]
    except OSError:
        return None
    return max(grids, key=lambda p: grid_step(p, raw) or 0) if grids else None


def grid_step(path: Path, raw: bool = False) -> int | None:
    """The step in a grid's name (step-00000150.png -> 150; with raw, step-00000150-raw.png -> 150)."""
    found = re.fullmatch(r"step-(\d+)" + (RAW_SUFFIX if raw else ""), path.stem)
    return int(found.group(1)) if found else None


def grid_columns(count: int) -> int:
    """Columns of a sample grid of `count` prompts: ⌈√count⌉ (core.images.make_grid's default)."""
    return max(1, math.ceil(math.sqrt(count)))


def prompt_rows(prompts: list[str], columns: int | None = None) -> list[str]:
    """One line per grid row: "Row 1: 1. a red circle · 2. a blue square" (prompt i at row i // columns)."""
    cols = columns or grid_columns(len(prompts))
    numbered = [f"{i + 1}. {p or '(empty prompt)'}" for i, p in enumerate(prompts)]
    return [f"Row {r + 1}: " + " · ".join(numbered[r * cols:(r + 1) * cols])
            for r in range(math.ceil(len(numbered) / cols))]


def run_sample_prompts(run_dir: Path | str) -> list[str]:
    """The fixed prompts of a run's grids, from RUN_DIR/config.json (empty if unknown)."""
    try:
        config = json.loads((Path(run_dir) / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return []
    prompts = config.get("sample_prompts") if isinstance(config, dict) else None
    return [str(p) for p in prompts] if isinstance(prompts, list) else []


@dataclass(frozen=True)
class CheckpointInfo:
    """One checkpoint of a run folder as the checkpoint list shows it."""

    step: int
    path: Path  # RUN_DIR/checkpoints/step-NNNNNNNN.safetensors
    loss: float | None  # the last logged loss before it (its JSON sidecar's metrics), if known
    written: float  # modification time (seconds since the epoch)

    def time_text(self, now: float | None = None) -> str:
        """"14:03:27" today, else "2026-12-01 14:03"."""
        when = datetime.datetime.fromtimestamp(self.written)
        today = datetime.datetime.fromtimestamp(time.time() if now is None else now).date()
        return when.strftime("%H:%M:%S" if when.date() == today else "%Y-%m-%d %H:%M")


_CHECKPOINT_RE = re.compile(r"^step-(\d{8,})\.safetensors$")


def run_checkpoints(run_dir: Path | str) -> list[CheckpointInfo]:
    """The complete checkpoints of a run (a .safetensors file with its .json sidecar), oldest first."""
    folder = Path(run_dir) / "checkpoints"
    found = []
    try:
        entries = list(folder.iterdir()) if folder.is_dir() else []
    except OSError:
        return []
    for path in entries:
        m = _CHECKPOINT_RE.match(path.name)
        sidecar = path.with_suffix(".json")
        if m is None:
            continue
        try:
            written = path.stat().st_mtime
            meta = json.loads(sidecar.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue  # no sidecar (yet): not a complete checkpoint
        metrics = meta.get("metrics") if isinstance(meta, dict) else None
        loss = metrics.get("loss") if isinstance(metrics, dict) else None
        known = isinstance(loss, (int, float)) and not isinstance(loss, bool) and math.isfinite(loss)
        found.append(CheckpointInfo(int(m.group(1)), path, float(loss) if known and loss is not None else None,
                                    written))
    return sorted(found, key=lambda c: c.step)


def looks_like_noise(image: np.ndarray) -> bool:
    """True if neighbouring pixels differ as in Gaussian noise: an untrained (or diverged) net's samples.

    Images a model has learned are smooth almost everywhere; x_T ~ N(0, I) clipped to uint8 and
    upscaled 2x by the grid changes by ~0.2 of the range from one pixel to the next, a Shapes
    grid by ~0.01.
    """
    x = np.asarray(image, dtype=np.float32) / 255.0
    if x.ndim < 2 or min(x.shape[:2]) < 2:
        return False
    rough = (np.abs(np.diff(x, axis=0)).mean() + np.abs(np.diff(x, axis=1)).mean()) / 2
    return bool(rough > NOISE_ROUGHNESS)


def loss_history(run_dir: Path | str) -> list[tuple[int, float]]:
    """(step, loss) of every progress event in RUN_DIR/events.jsonl (empty if there is none)."""
    try:
        text = (Path(run_dir) / "events.jsonl").read_text(encoding="utf-8")
    except OSError:
        return []
    history = TrainRun()
    for line in text.splitlines():
        event = parse_event(line)
        if event is not None and event["event"] == "progress":
            history.apply(event)
    return history.losses


_ERROR_PREFIX = re.compile(r"^error:\s*", re.IGNORECASE)


def error_line(stderr_lines: list[str]) -> str:
    """The one line a failed child process said: its `error: …` line, else its last line."""
    lines = [line.strip() for line in stderr_lines if line.strip()]
    for line in reversed(lines):
        if _ERROR_PREFIX.match(line):
            return _ERROR_PREFIX.sub("", line)
    return lines[-1] if lines else ""


def train_outcome(run: TrainRun, exit_code: int, crashed: bool, stderr_lines: list[str],
                  stop_requested: bool) -> tuple[str, str]:
    """(kind, sentence) for the end of a training process; kind is done, stopped or error."""
    checkpoint = f" Last checkpoint: {run.checkpoint}." if run.checkpoint else ""
    if not crashed and exit_code == 0 and run.outcome == "done":
        return "done", f"Training finished after {run.step} steps.{checkpoint}"
    if not crashed and exit_code in (0, 130) and run.outcome != "error":
        return "stopped", f"Training stopped at step {run.step}.{checkpoint} Tick Resume to continue it."
    if stop_requested and (crashed or exit_code in (-15, 143)):
        return "stopped", f"Training was stopped at step {run.step} before it could write a checkpoint."
    if exit_code == 2:  # bad input: the CLI's one line
        return "error", error_line(stderr_lines) or (run.error or "The training command was refused.")
    if crashed:
        return "error", f"The training process crashed (exit status {exit_code}).{checkpoint}"
    reason = run.error or error_line(stderr_lines) or f"exit code {exit_code}"
    return "error", f"Training failed: {reason}"


@dataclass
class ExportSummary:
    """What the exporter printed that the user cares about."""

    parity: str = ""  # the "parity vs PyTorch …: PASSED" line
    wrote: str = ""  # the "wrote BUNDLE (…)" line

    def add(self, line: str) -> None:
        text = line.strip()
        if text.startswith("parity"):
            self.parity = text
        elif text.startswith("wrote "):
            self.wrote = text

    def text(self) -> str:
        return "\n".join(part for part in (self.parity, self.wrote) if part)


def export_outcome(exit_code: int, crashed: bool, stderr_lines: list[str], bundle: Path) -> tuple[bool, str]:
    """(success, sentence) for the end of an export process."""
    if not crashed and exit_code == 0:
        return True, f"Exported the model bundle to {bundle}."
    if crashed:
        return False, f"The export process crashed (exit status {exit_code}); nothing was written."
    return False, error_line(stderr_lines) or f"The export failed with exit code {exit_code}."
