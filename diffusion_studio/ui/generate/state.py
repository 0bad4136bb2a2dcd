"""The Generate form's state, headless: what the settings column shows and edits.

`GenerationSettings` is a plain value object. The settings panel (Qt) reads and writes
it; the main window turns it into a `GenerationRequest`; PNG metadata (ours, or the
common `parameters` text) turns back into one for "Reuse settings" and drag-and-drop.
"""

from __future__ import annotations

import random
import re
from dataclasses import asdict, dataclass, fields, replace
from enum import Enum
from typing import Any

from diffusion_studio.core.params import SEED_MAX, SamplerKind, parse_sampler
from diffusion_studio.errors import UsageError

# (id, label) in the order the sampler combo lists them.
SAMPLERS: tuple[tuple[str, str], ...] = (
    (SamplerKind.DPMPP_2M.value, "DPM-Solver++ (2M)"),
    (SamplerKind.DDIM.value, "DDIM"),
    (SamplerKind.DDPM.value, "DDPM (ancestral)"),
)
DICE_SEED_MAX = 2**31 - 1  # the dice picks short seeds; any seed up to SEED_MAX (2⁶³−1) is accepted
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
    return (rng or random.SystemRandom()).randint(0, DICE_SEED_MAX)


def normalise_sampler(name: str) -> str:
    """Our sampler id for an id or a display label ("DPM++ 2M"); UsageError if unknown."""
    return parse_sampler(name).value


def sampler_label(sampler: str) -> str:
    """The sampler combo's label for one of our sampler ids."""
    return dict(SAMPLERS).get(sampler, sampler)


# Names other tools write (AUTOMATIC1111 "DPM++ 2M Karras", ComfyUI "dpmpp_2m_sde") -> the closest
# sampler we have. Only the same solver family maps; everything else is reported as unavailable.
_CLOSE_SAMPLERS: tuple[tuple[re.Pattern[str], SamplerKind], ...] = (
    (re.compile(r"^(dpm\+\+|dpmpp)[ _-]?2m(\b|_)"), SamplerKind.DPMPP_2M),
    (re.compile(r"^ddim(\b|_)"), SamplerKind.DDIM),
    (re.compile(r"^ddpm(\b|_)"), SamplerKind.DDPM),
)


def closest_sampler(name: str) -> str | None:
    """Our sampler id for a sampler name written by us or another tool, None if we have none close."""
    try:
        return normalise_sampler(name)
    except UsageError:
        pass
    key = name.strip().lower()
    for pattern, kind in _CLOSE_SAMPLERS:
        if pattern.match(key):
            return kind.value
    return None


def _is_exact_sampler(name: str) -> bool:
    try:
        normalise_sampler(name)
    except UsageError:
        return False
    return True


def _as_int(value: Any) -> int | None:
    """An int from metadata (int, integral float or decimal text), None if it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    try:
        return int(str(value).strip())
    except ValueError:
        return None


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number and abs(number) != float("inf") else None


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

    def with_metadata(self, meta: dict[str, Any], T: int | None = None) -> GenerationSettings:
        """These settings with the generation parameters of PNG metadata applied (see `restore`)."""
        return self.restore(meta, T)[0]

    def restore(self, meta: dict[str, Any], T: int | None = None) -> tuple[GenerationSettings, list[str]]:
        """These settings with PNG metadata applied, and notes on what could not be applied as is.

        Everything usable is filled in; a value we cannot use never rejects the rest: an
        unknown sampler keeps the current one, steps beyond the model's `T` (or the form's
        maximum) and guidance beyond its range are clamped, a bad seed keeps the current
        one. Each such case adds a note. The seed is locked so that Generate reproduces the
        image. UsageError only if the metadata holds no prompt at all (then it is not one of
        ours or a parameters text).
        """
        if "prompt" not in meta:
            raise UsageError("This image holds no generation parameters (no prompt in its metadata).")
        notes: list[str] = []
        values: dict[str, Any] = {"prompt": str(meta["prompt"]), "seed_locked": True}
        values["negative_prompt"] = str(meta.get("negative_prompt", "") or "")
        if meta.get("sampler"):
            name = str(meta["sampler"]).strip()
            sampler = closest_sampler(name)
            if sampler is None:
                notes.append(f"sampler '{name}' is not available; kept {sampler_label(self.sampler)}")
            else:
                values["sampler"] = sampler
                if not _is_exact_sampler(name):  # e.g. Karras sigmas are not used: say so
                    notes.append(f"sampler '{name}' runs as {sampler_label(sampler)}")
        if meta.get("steps") is not None:
            steps = _as_int(meta["steps"])
            limit = min(STEPS_MAX, T) if T else STEPS_MAX
            if steps is None:
                notes.append(f"steps '{meta['steps']}' is not a number; kept {self.steps}")
            elif not 1 <= steps <= limit:
                values["steps"] = min(max(steps, 1), limit)
                bound = f"the model's T = {limit}" if steps > limit and limit == T else f"the range 1–{limit}"
                notes.append(f"{steps} steps is outside {bound}; using {values['steps']}")
            else:
                values["steps"] = steps
        if meta.get("guidance") is not None:
            guidance = _as_float(meta["guidance"])
            if guidance is None:
                notes.append(f"guidance '{meta['guidance']}' is not a number; kept {self.guidance:g}")
            else:
                values["guidance"] = min(max(guidance, 0.0), GUIDANCE_MAX)
                if values["guidance"] != guidance:
                    notes.append(f"guidance {guidance:g} is outside 0–{GUIDANCE_MAX:g}; using {values['guidance']:g}")
        if meta.get("seed") is not None:
            seed = _as_int(meta["seed"])
            if seed is None or not 0 <= seed <= SEED_MAX:
                notes.append(f"seed '{meta['seed']}' is not an integer between 0 and {SEED_MAX}; kept {self.seed}")
            else:
                values["seed"] = seed
        return replace(self, **values).validated(), notes


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
