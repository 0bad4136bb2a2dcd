"""The Generate form's state, headless: what the settings column shows and edits.

`GenerationSettings` is a plain value object. The settings panel (Qt) reads and writes
it; the main window turns it into a `GenerationRequest`; PNG metadata (ours, or the
common `parameters` text) turns back into one for "Reuse settings" and drag-and-drop.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, fields, replace
from enum import Enum
from typing import Any

from diffusion_studio.core.samplers import SamplerKind, parse_sampler
from diffusion_studio.errors import UsageError

# (id, label) in the order the sampler combo lists them.
SAMPLERS: tuple[tuple[str, str], ...] = (
    (SamplerKind.DPMPP_2M.value, "DPM-Solver++ (2M)"),
    (SamplerKind.DDIM.value, "DDIM"),
    (SamplerKind.DDPM.value, "DDPM (ancestral)"),
)
SEED_MAX = 2**31 - 1
STEPS_MAX = 1000
BATCH_MAX = 16
GUIDANCE_MAX = 30.0

class Device(str, Enum):
    AUTO = "auto"
    CUDA = "cuda"
    CPU = "cpu"

    @property
    def label(self) -> str:
        return {"auto": "Auto", "cuda": "CUDA", "cpu": "CPU"}[self.value]


def random_seed(rng: random.Random | None = None) -> int:
    """A fresh seed for the dice button (and for unlocked seeds on every run)."""
    return (rng or random.SystemRandom()).randint(0, SEED_MAX)


def normalise_sampler(name: str) -> str:
    """Our sampler id for an id or a display label ("DPM++ 2M"); UsageError if unknown."""
    return parse_sampler(name).value


@dataclass(frozen=True)
class GenerationSettings:
    """Everything the user sets before clicking Generate."""

    prompt: str = ""
    negative_prompt: str = ""
    sampler: str = "dpmpp-2m"
    steps: int = 20
    guidance: float = 3.0
    seed: int = 0
    seed_locked: bool = False
    batch: int = 1
    device: Device = Device.AUTO

    def validated(self) -> GenerationSettings:
        """Self, or a UsageError naming the first field that is out of range."""
        normalise_sampler(self.sampler)
        if not 1 <= self.steps <= STEPS_MAX:
            raise UsageError(f"Steps must be between 1 and {STEPS_MAX}, got {self.steps}.")
        if not 0.0 <= self.guidance <= GUIDANCE_MAX:
            raise UsageError(f"Guidance must be between 0 and {GUIDANCE_MAX:g}, got {self.guidance:g}.")
        if not 0 <= self.seed <= SEED_MAX:
            raise UsageError(f"The seed must be between 0 and {SEED_MAX}, got {self.seed}.")
        if not 1 <= self.batch <= BATCH_MAX:
            raise UsageError(f"Batch size must be between 1 and {BATCH_MAX}, got {self.batch}.")
        return self

    def for_next_run(self, rng: random.Random | None = None) -> GenerationSettings:
        """The settings a run uses: an unlocked seed is re-rolled first."""
        return self if self.seed_locked else replace(self, seed=random_seed(rng))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["device"] = self.device.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerationSettings:
        """Settings from a (possibly partial or stale) dict; bad values fall back to defaults."""
        defaults = cls()
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in data or data[f.name] is None:
                continue
            default = getattr(defaults, f.name)
            try:
                values[f.name] = _coerce(default, data[f.name])
            except (TypeError, ValueError):
                continue
        try:
            return replace(defaults, **values).validated()
        except UsageError:
            return defaults

    def with_metadata(self, meta: dict[str, Any]) -> GenerationSettings:
        """These settings with the generation parameters found in PNG metadata applied.

        The seed is locked so that Generate reproduces the image. UsageError if the
        metadata holds no prompt at all (then it is not one of ours or a parameters text).
        """
        if "prompt" not in meta:
            raise UsageError("This image holds no generation parameters (no prompt in its metadata).")
        values: dict[str, Any] = {"prompt": str(meta["prompt"]), "seed_locked": True}
        values["negative_prompt"] = str(meta.get("negative_prompt", "") or "")
        if meta.get("sampler"):
            values["sampler"] = normalise_sampler(str(meta["sampler"]))
        for key, kind in (("steps", int), ("guidance", float), ("seed", int)):
            if meta.get(key) is not None:
                try:
                    values[key] = kind(meta[key])
                except (TypeError, ValueError) as exc:
                    raise UsageError(f"The image's {key} '{meta[key]}' is not a number.") from exc
        return replace(self, **values).validated()


def _coerce(default: Any, value: Any) -> Any:
    if isinstance(default, Device):
        return Device(str(value).lower())
    if isinstance(default, bool):
        if isinstance(value, str):
            return value.strip().lower() in ("1", "true", "yes")
        return bool(value)
    if isinstance(default, int):
        return int(value)
    if isinstance(default, float):
        return float(value)
    return str(value)
