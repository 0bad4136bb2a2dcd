"""The Train workspace, headless: the form, the command lines it runs, and the run's progress.

The GUI never imports torch: training is `python -m diffusion_studio train … --json` in a
child process whose stdout carries one JSON event per line (training/events.py), and export
is `python -m exporter RUN_DIR --out BUNDLE`. This module builds those command lines from
`TrainForm`, folds the events into `TrainRun`, and turns exit codes and stderr into one
sentence for the user.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import re
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import diffusion_studio
from diffusion_studio.errors import UsageError

PRESETS: tuple[tuple[str, str], ...] = (
    ("cpu-quick", "Quick CPU test (a tiny net, minutes)"),
    ("cpu", "CPU (the default Shapes model)"),
    ("gpu", "GPU (a larger net)"),
)
DEVICES: tuple[tuple[str, str], ...] = (("auto", "Auto"), ("cpu", "CPU"), ("cuda", "CUDA"))
DATASETS: tuple[tuple[str, str], ...] = (("shapes", "Shapes (procedural)"), ("folder", "Image folder"))
EVENT_KINDS = ("start", "progress", "sample", "checkpoint", "done", "stopped", "error")


def project_root() -> Path:
    """The folder holding the `diffusion_studio` and `exporter` packages (for PYTHONPATH)."""
    return Path(diffusion_studio.__file__).resolve().parent.parent


def child_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment of the child processes: passive OpenMP waits, unbuffered output, our packages importable."""
    env = dict(os.environ if base is None else base)
    env["OMP_WAIT_POLICY"] = "PASSIVE"  # spinning OpenMP threads slow a busy machine (and the GUI) down
    env["PYTHONUNBUFFERED"] = "1"
    root = str(project_root())
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in paths if p != root])
    return env


def suggest_run_dir(base: Path, now: datetime.datetime | None = None) -> Path:
    """A fresh run folder name under `base`: run-YYYYmmdd-HHMMSS."""
    stamp = (now or datetime.datetime.now()).strftime("%Y%m%d-%H%M%S")
    return base / f"run-{stamp}"


def default_bundle_dir(run_dir: Path | str) -> Path:
    """Where the export of a run goes unless the user picks another folder: a sibling `<run>-bundle`."""
    run = Path(run_dir)
    return run.with_name(f"{run.name}-bundle")


def checkpoints_in(run_dir: Path | str) -> list[Path]:
    """The run's checkpoint files, oldest first (empty if there is none or no such folder)."""
    folder = Path(run_dir) / "checkpoints"
    try:
        return sorted(folder.glob("step-*.safetensors"))
    except OSError:
        return []


def _is_nonempty_dir(path: Path) -> bool:
    try:
        return path.is_dir() and any(path.iterdir())
    except OSError:
        return False


@dataclass(frozen=True)
class TrainForm:
    """What the Train form holds. None means "the preset's value" (or the CLI default)."""

    dataset: str = "shapes"  # "shapes" or "folder"
    folder: str = ""
    preset: str = "cpu-quick"
    steps: int | None = None
    batch_size: int | None = None
    image_size: int | None = None
    out: str = ""
    resume: bool = False
    device: str = "auto"
    sample_every: int | None = None  # 0: sample grids only at the end
    checkpoint_every: int | None = None
    threads: int | None = None  # None: all cores

    def dataset_arg(self) -> str:
        return "shapes" if self.dataset == "shapes" else f"folder:{self.folder}"

    def validated(self) -> TrainForm:
        """Self, or a UsageError with one sentence for the first thing the user must fix."""
        if self.dataset not in dict(DATASETS):
            raise UsageError(f"Unknown dataset '{self.dataset}'; choose Shapes or an image folder.")
        if self.dataset == "folder" and not self.folder.strip():
            raise UsageError("Choose the image folder to train on.")
        if self.preset not in dict(PRESETS):
            raise UsageError(f"Unknown preset '{self.preset}'; use cpu-quick, cpu or gpu.")
        if self.device not in dict(DEVICES):
            raise UsageError(f"Unknown device '{self.device}'; use auto, cpu or cuda.")
        if not self.out.strip():
            raise UsageError("Choose an output run folder.")
        for name, value, lo in (("Steps", self.steps, 1), ("Batch size", self.batch_size, 1),
                                ("Image size", self.image_size, 8), ("Sample every", self.sample_every, 0),
                                ("Checkpoint every", self.checkpoint_every, 1), ("Threads", self.threads, 1)):
            if value is not None and value < lo:
                raise UsageError(f"{name} must be at least {lo}, got {value}.")
        out = Path(self.out).expanduser()
        if not self.resume and _is_nonempty_dir(out):
            raise UsageError(f"The run folder {out} already exists and is not empty; tick Resume to continue "
                             "it or choose another folder.")
        if self.resume and not checkpoints_in(out):
            raise UsageError(f"There is no checkpoint in {out} to resume from.")
        return self

    def arguments(self) -> list[str]:
        """Arguments after `python`: -m diffusion_studio train … --json (validated first)."""
        self.validated()
        args = ["-m", "diffusion_studio", "train", "--dataset", self.dataset_arg(),
                "--out", str(Path(self.out).expanduser()), "--preset", self.preset, "--device", self.device]
        for flag, value in (("--steps", self.steps), ("--batch-size", self.batch_size),
                            ("--image-size", self.image_size), ("--sample-every", self.sample_every),
                            ("--checkpoint-every", self.checkpoint_every), ("--threads", self.threads)):
            if value is not None:
                args += [flag, str(value)]
        if self.resume:
            args.append("--resume")
        return args + ["--json"]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainForm:
        """A form from saved settings; unknown keys and values of the wrong type are dropped."""
        defaults = cls()
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in data:
                continue
            value, default = data[f.name], getattr(defaults, f.name)
            if isinstance(default, bool):
                if isinstance(value, bool):
                    values[f.name] = value
            elif isinstance(default, str):
                if isinstance(value, str):
                    values[f.name] = value
            elif value is None or (isinstance(value, int) and not isinstance(value, bool)):
                values[f.name] = value
        form = replace(defaults, **values)
        if form.dataset not in dict(DATASETS) or form.preset not in dict(PRESETS) or form.device not in dict(DEVICES):
            return defaults
        return form


def export_arguments(run_dir: Path | str, bundle: Path | str, force: bool = False) -> list[str]:
    """Arguments after `python`: -m exporter RUN_DIR --out BUNDLE [--force]."""
    run, out = Path(run_dir).expanduser(), Path(bundle).expanduser()
    if not str(bundle).strip():
        raise UsageError("Choose the folder to write the model bundle to.")
    if not checkpoints_in(run):
        raise UsageError(f"There is no checkpoint in {run} to export yet.")
    return ["-m", "exporter", str(run), "--out", str(out)] + (["--force"] if force else [])


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
    sample_grid: str | None = None
    sample_step: int | None = None
    sample_prompts: list[str] = field(default_factory=list)
    checkpoint: str | None = None
    outcome: str | None = None  # "done", "stopped" or "error" once the final event arrived
    error: str | None = None

    def apply(self, event: dict[str, Any]) -> str:
        """Fold one event in; returns its kind."""
        kind = str(event.get("event"))
        if isinstance(event.get("step"), int):
            self.step = event["step"]
        if isinstance(event.get("steps"), int):
            self.steps = event["steps"]
        if kind == "start":
            self.start_step = self.step
            self.parameters = event.get("parameters")
            self.device = str(event.get("device", ""))
        elif kind == "progress":
            loss = event.get("loss")
            if isinstance(loss, (int, float)) and math.isfinite(loss):
                self.losses.append((self.step, float(loss)))
            buckets = event.get("bucket_loss")
            if isinstance(buckets, list):
                self.bucket_loss = [float(b) if isinstance(b, (int, float)) else None for b in buckets]
            self.lr = event.get("lr", self.lr)
            self.images_per_s = event.get("images_per_s", self.images_per_s)
            self.eta_s = event.get("eta_s", self.eta_s)
        elif kind == "sample" and event.get("sample_grid"):
            self.sample_grid, self.sample_step = str(event["sample_grid"]), self.step
            prompts = event.get("prompts")
            self.sample_prompts = [str(p) for p in prompts] if isinstance(prompts, list) else []
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
