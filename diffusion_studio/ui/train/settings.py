"""What the Train form holds, headless (no Qt): `TrainForm` and the command lines it runs.

The GUI never imports torch: training is `python -m diffusion_studio train … --json` in a
child process and export is `python -m exporter RUN_DIR --out BUNDLE`; this module builds
those argument lists (the form's one sentence for the first thing the user must fix) and
names run and bundle folders.
"""

from __future__ import annotations

import datetime
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from diffusion_studio.errors import UsageError

PRESETS: tuple[tuple[str, str], ...] = (
    ("cpu-quick", "Quick CPU test (a tiny net, minutes)"),
    ("cpu", "CPU (the default Shapes model)"),
    ("gpu", "GPU (a larger net)"),
)
DEVICES: tuple[tuple[str, str], ...] = (("auto", "Auto"), ("cpu", "CPU"), ("cuda", "CUDA"))
DATASETS: tuple[tuple[str, str], ...] = (("shapes", "Shapes (procedural)"), ("folder", "Image folder"))
# The presets' numbers (training/config.py `preset()`; a test keeps the two equal), so the form
# shows what a preset means without importing torch.
PRESET_VALUES: dict[str, dict[str, int]] = {
    "cpu-quick": {"steps": 300, "batch_size": 32, "image_size": 32, "sample_every": 150, "checkpoint_every": 100},
    "cpu": {"steps": 6000, "batch_size": 64, "image_size": 32, "sample_every": 1000, "checkpoint_every": 250},
    "gpu": {"steps": 30000, "batch_size": 256, "image_size": 32, "sample_every": 2000, "checkpoint_every": 1000},
}
# Noise schedules (diffusion-studio train --schedule); None in the form is the preset's, linear for all three.
SCHEDULES: tuple[tuple[str, str], ...] = (("linear", "Linear (DDPM)"), ("cosine", "Cosine (Improved DDPM)"))
PRESET_SCHEDULE: dict[str, str] = {"cpu-quick": "linear", "cpu": "linear", "gpu": "linear"}
DEFAULT_RUN_NAME = "my-model"


def default_run_dir(base: Path) -> Path:
    """The run folder the form starts with: the same on every launch, so Resume finds it."""
    return base / DEFAULT_RUN_NAME


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
    schedule: str | None = None  # "linear" | "cosine"; None: the preset's
    learn_sigma: bool = False  # Improved DDPM: learn Σ_θ with L_hybrid (--learn-sigma)

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
        if self.schedule is not None and self.schedule not in dict(SCHEDULES):
            raise UsageError(f"Unknown noise schedule '{self.schedule}'; use linear or cosine.")
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
        if self.resume:  # a resumed run keeps its own schedule and variance head (config.json)
            args.append("--resume")
        else:
            if self.schedule is not None:
                args += ["--schedule", self.schedule]
            if self.learn_sigma:
                args.append("--learn-sigma")
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
            elif isinstance(default, str) or f.name == "schedule":
                if isinstance(value, str) or (value is None and default is None):
                    values[f.name] = value
            elif value is None or (isinstance(value, int) and not isinstance(value, bool)):
                values[f.name] = value
        form = replace(defaults, **values)
        if form.dataset not in dict(DATASETS) or form.preset not in dict(PRESETS) or form.device not in dict(DEVICES):
            return defaults
        if form.schedule is not None and form.schedule not in dict(SCHEDULES):
            form = replace(form, schedule=None)
        return form


def export_arguments(run_dir: Path | str, bundle: Path | str, force: bool = False) -> list[str]:
    """Arguments after `python`: -m exporter RUN_DIR --out BUNDLE [--force]."""
    run, out = Path(run_dir).expanduser(), Path(bundle).expanduser()
    if not str(bundle).strip():
        raise UsageError("Choose the folder to write the model bundle to.")
    if not checkpoints_in(run):
        raise UsageError(f"There is no checkpoint in {run} to export yet.")
    return ["-m", "exporter", str(run), "--out", str(out)] + (["--force"] if force else [])
