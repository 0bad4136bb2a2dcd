"""What the Generate form holds, headless (no Qt): `GenerationSettings`, a plain value object.

`GenerateState` (state.py) keeps the current settings and says when they change; the
settings panel shows and edits them; a run turns them into a `GenerationRequest`; PNG
metadata (ours, or the common `parameters` text) turns back into settings for "Reuse
settings" and drag-and-drop. Names, ranges and messages come from `core.params`.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, fields, replace
from enum import Enum
from typing import Any

from diffusion_studio.core.bundle import MAX_T
from diffusion_studio.core.params import (
    DEFAULT_GUIDANCE,
    DEFAULT_SAMPLER,
    DEFAULT_STEPS,
    GUIDANCE_MAX,
    SEED_MAX,
    check_batch,
    check_guidance,
    check_seed,
    check_steps,
    check_strength,
    closest_sampler,
    parse_sampler,
    random_seed,
    sampler_label,
)
from diffusion_studio.errors import UsageError
from diffusion_studio.ui.generate.init_image import DEFAULT_STRENGTH


class Device(str, Enum):
    AUTO = "auto"
    CUDA = "cuda"
    CPU = "cpu"

    @property
    def label(self) -> str:
        return {"auto": "Auto", "cuda": "CUDA", "cpu": "CPU"}[self.value]


def steps_limit(T: int | None) -> int:
    """The most steps the form takes: the model's T, or the largest T of any bundle without a model."""
    return T if T else MAX_T


def _is_exact_sampler(name: str) -> bool:
    try:
        parse_sampler(name)
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
    return number if math.isfinite(number) else None


@dataclass(frozen=True)
class GenerationSettings:
    """Everything the user sets before clicking Generate."""

    prompt: str = ""
    negative_prompt: str = ""
    sampler: str = DEFAULT_SAMPLER.value
    steps: int = DEFAULT_STEPS
    guidance: float = DEFAULT_GUIDANCE
    seed: int = 0
    seed_locked: bool = False
    batch: int = 1
    device: Device = Device.AUTO
    strength: float = DEFAULT_STRENGTH  # img2img: used only while the form holds an init image
    class_label: int | None = None  # the class of a class-conditional model (its index); None: none chosen
    width: int | None = None  # latent models only (any multiple of the VAE factor); None: the model's size
    height: int | None = None

    def validated(self, T: int | None = None) -> GenerationSettings:
        """Self, or a UsageError (the `core.params` sentence) for the first field out of range.

        Steps are checked against the model's T when it is known.
        """
        parse_sampler(self.sampler)
        check_steps(self.steps, steps_limit(T))
        check_guidance(self.guidance)
        check_seed(self.seed, check_batch(self.batch))
        check_strength(self.strength)
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
                values[f.name] = (int(data[f.name]) if f.name in ("class_label", "width", "height")
                                  else _coerce(default, data[f.name]))
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
        one. Each such case adds a note. An img2img strength ("Denoising strength") is
        taken when the metadata has one (the init image is the state's business), and so is
        the class of a class-conditional model's image ("Class"). The seed
        is locked so that Generate reproduces the image. UsageError only if the metadata holds
        no prompt at all (then it is not one of ours or a parameters text).
        """
        if "prompt" not in meta:
            raise UsageError("This image holds no generation parameters (no prompt in its metadata).")
        notes: list[str] = []
        values: dict[str, Any] = {"prompt": str(meta["prompt"]), "seed_locked": True}
        values["negative_prompt"] = str(meta.get("negative_prompt", "") or "")
        if meta.get("sampler"):
            name = str(meta["sampler"]).strip()
            kind = closest_sampler(name)
            if kind is None:
                notes.append(f"sampler '{name}' is not available; kept {sampler_label(self.sampler)}")
            else:
                sampler = values["sampler"] = kind.value
                if not _is_exact_sampler(name):  # e.g. Karras sigmas are not used: say so
                    notes.append(f"sampler '{name}' runs as {sampler_label(sampler)}")
        if meta.get("steps") is not None:
            steps = _as_int(meta["steps"])
            limit = steps_limit(T)
            if steps is None:
                notes.append(f"steps '{meta['steps']}' is not a number; kept {self.steps}")
            elif not 1 <= steps <= limit:
                values["steps"] = min(max(steps, 1), limit)
                bound = f"the model's T = {limit}" if steps > limit and T else f"the range 1–{limit}"
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
            elif seed + self.batch - 1 > SEED_MAX:  # image i of the batch uses seed + i
                notes.append(f"seed {seed} leaves no room for a batch of {self.batch}; kept {self.seed}")
            else:
                values["seed"] = seed
        if meta.get("class_label") is not None:
            label = _as_int(meta["class_label"])
            if label is None or label < 0:
                notes.append(f"class '{meta['class_label']}' is not a class number; kept the current class")
            else:
                values["class_label"] = label
        for key in ("width", "height"):  # a latent model's size (a pixel model keeps its own; the panel says so)
            if meta.get(key) is not None:
                side = _as_int(meta[key])
                if side is None or not 1 <= side <= 4096:
                    notes.append(f"{key} '{meta[key]}' is not a size in pixels; kept the current {key}")
                else:
                    values[key] = side
        if meta.get("strength") is not None:
            strength = _as_float(meta["strength"])
            if strength is None or not 0.0 < strength <= 1.0:
                notes.append(f"strength '{meta['strength']}' is not in (0, 1]; kept {self.strength:g}")
            else:
                values["strength"] = strength
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
