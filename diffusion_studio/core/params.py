"""Generation parameters, defined once: sampler ids and labels, the DDPM variance, ranges, checks.

Every front end takes its names, bounds and messages from here: the CLI's argparse choices,
`inference.pipeline.GenerationRequest`, the GUI form and history, eval, the exporter and
training samples. Each `check_*` function is the one validation of its parameter; it returns
the value normalised (plain int / float) or raises `UsageError` with one sentence.

Pure Python (no numpy), so that argparse can use it without loading numpy; numpy scalars pass
the checks through the `numbers` ABCs (np.integer is Integral, np.floating is Real).
"""

from __future__ import annotations

import math
import random
import re
from enum import Enum
from numbers import Integral, Real

from diffusion_studio.errors import UsageError

__all__ = [
    "A1111_SAMPLER_NAMES",
    "BATCH_MAX",
    "CLIP_RANGE_MAX",
    "DDPM_VARIANCES",
    "DEFAULT_GUIDANCE",
    "DEFAULT_SAMPLER",
    "DEFAULT_STEPS",
    "ETA_MAX",
    "GUIDANCE_MAX",
    "RANDOM_SEED_MAX",
    "SAMPLER_IDS",
    "SAMPLER_LABELS",
    "SEED_MAX",
    "DdpmVariance",
    "SamplerKind",
    "check_batch",
    "check_clip_range",
    "check_eta",
    "check_guidance",
    "check_seed",
    "check_steps",
    "check_strength",
    "closest_sampler",
    "parse_ddpm_variance",
    "parse_sampler",
    "random_seed",
    "sampler_label",
]


class SamplerKind(str, Enum):
    DDPM = "ddpm"          # Ho et al. 2020, Algorithm 2 (ancestral)
    DDIM = "ddim"          # Song et al. 2021, eq. 12
    DPMPP_2M = "dpmpp-2m"  # Lu et al. 2022, DPM-Solver++(2M)


class DdpmVariance(str, Enum):
    """σ_t² of the DDPM sampler (DDPM §3.2), spelled as users type it."""

    BETA = "beta"              # σ_t² = β_t  ("fixed large")
    BETA_TILDE = "beta-tilde"  # σ_t² = β̃_t ("fixed small", the true posterior variance)


SAMPLER_IDS: tuple[str, ...] = tuple(kind.value for kind in SamplerKind)  # CLI choices, messages
# Display labels, in the order a menu lists them (the default first).
SAMPLER_LABELS: dict[SamplerKind, str] = {
    SamplerKind.DPMPP_2M: "DPM-Solver++ (2M)",
    SamplerKind.DDIM: "DDIM",
    SamplerKind.DDPM: "DDPM (ancestral)",
}
# Names as AUTOMATIC1111 / ComfyUI users know them: written into (and read from) PNG `parameters`.
A1111_SAMPLER_NAMES: dict[SamplerKind, str] = {
    SamplerKind.DDPM: "DDPM",
    SamplerKind.DDIM: "DDIM",
    SamplerKind.DPMPP_2M: "DPM++ 2M",
}
DDPM_VARIANCES: tuple[str, ...] = tuple(v.value for v in DdpmVariance)

DEFAULT_SAMPLER = SamplerKind.DPMPP_2M
DEFAULT_STEPS = 20
DEFAULT_GUIDANCE = 3.0

# Guidance w of ε̂ = ε_u + w (ε_c − ε_u). Images saturate long before 100, but bundles (model.json
# sampler_defaults) and training runs (sample_guidance) already accept up to 100, and every front
# end must take any value a bundle or a PNG can hold; the bound also keeps w (ε_c − ε_u) far from
# float32 overflow (w = 1e308 would give inf).
GUIDANCE_MAX = 100.0
# Images per batch (one batched network call per step). 64 x 32² x 3 float32 is 0.8 MB per array;
# the CLI has accepted 64 since the start, so the GUI's former 16 was the odd one out.
BATCH_MAX = 64
ETA_MAX = 1.0  # DDIM η (eq. 16): 0 deterministic, 1 DDPM-like; beyond 1 σ_t exceeds √(1 − ᾱ_{t−1})
# x̂_0 is clipped to [−r, r] (diffusers' clip_sample_range); images live in [−1, 1], so r = 1 is the
# default and other values only serve models trained on another range.
CLIP_RANGE_MAX = 1000.0
SEED_MAX = 2**63 - 1  # any non-negative int64: numpy, torch and JSON metadata all hold it
RANDOM_SEED_MAX = 2**31 - 1  # random seeds are short (easy to read and type); any seed up to SEED_MAX works


def parse_sampler(name: object) -> SamplerKind:
    """Sampler id ('ddpm' | 'ddim' | 'dpmpp-2m', also with '_'), display label or A1111 name -> SamplerKind."""
    if isinstance(name, SamplerKind):
        return name
    if isinstance(name, str):
        key = name.strip().lower()
        for kind in SamplerKind:
            names = (kind.value, kind.value.replace("-", "_"), SAMPLER_LABELS[kind], A1111_SAMPLER_NAMES[kind])
            if key in (n.lower() for n in names):
                return kind
    raise UsageError(f"Unknown sampler {name!r}; choose one of {', '.join(SAMPLER_IDS)}.")


def sampler_label(name: object) -> str:
    """The display label of a sampler ("dpmpp-2m" -> "DPM-Solver++ (2M)"); unknown names as they are."""
    try:
        return SAMPLER_LABELS[parse_sampler(name)]
    except UsageError:
        return str(name)


# Names other tools write (AUTOMATIC1111 "DPM++ 2M Karras", ComfyUI "dpmpp_2m_sde") -> the closest
# sampler we have. Only the same solver family maps.
_CLOSE_SAMPLERS: tuple[tuple[re.Pattern[str], SamplerKind], ...] = (
    (re.compile(r"^(dpm\+\+|dpmpp)[ _-]?2m(\b|_)"), SamplerKind.DPMPP_2M),
    (re.compile(r"^ddim(\b|_)"), SamplerKind.DDIM),
    (re.compile(r"^ddpm(\b|_)"), SamplerKind.DDPM),
)


def closest_sampler(name: str) -> SamplerKind | None:
    """Our sampler for a name written by us or another tool (same solver family), None if none is close."""
    try:
        return parse_sampler(name)
    except UsageError:
        pass
    key = name.strip().lower()
    for pattern, kind in _CLOSE_SAMPLERS:
        if pattern.match(key):
            return kind
    return None


def parse_ddpm_variance(name: object) -> DdpmVariance:
    """'beta' | 'beta-tilde' (case and '_' for '-' forgiven) -> DdpmVariance, else UsageError."""
    if isinstance(name, DdpmVariance):
        return name
    if isinstance(name, str):
        key = name.strip().lower().replace("_", "-")
        for variance in DdpmVariance:
            if key == variance.value:
                return variance
    raise UsageError(f"Unknown DDPM variance {name!r}; choose one of {', '.join(DDPM_VARIANCES)}.")


def _as_int(value: object) -> int | None:
    """An integer value (Python or numpy, not bool) as int, else None."""
    return int(value) if isinstance(value, Integral) and not isinstance(value, bool) else None


def _as_float(value: object) -> float | None:
    """A finite real value (Python or numpy, not bool) as float, else None."""
    if isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(float(value)):
        return float(value)
    return None


def check_steps(steps: object, T: int) -> int:
    """Sampler steps: an integer in 1..T (the model's T; a sub-sequence of its timesteps)."""
    n = _as_int(steps)
    if n is None or not 1 <= n <= T:
        raise UsageError(f"Steps must be an integer between 1 and {T} (the model's T), got {steps!r}.")
    return n


def check_guidance(w: object) -> float:
    """Classifier-free guidance scale w in [0, GUIDANCE_MAX]."""
    value = _as_float(w)
    if value is None or not 0.0 <= value <= GUIDANCE_MAX:
        raise UsageError(f"Guidance must be a number between 0 and {GUIDANCE_MAX:g}, got {w!r}.")
    return value


def check_eta(eta: object) -> float:
    """DDIM's η in [0, ETA_MAX]."""
    value = _as_float(eta)
    if value is None or not 0.0 <= value <= ETA_MAX:
        raise UsageError(f"Eta must be a number between 0 and {ETA_MAX:g} (DDIM's η), got {eta!r}.")
    return value


def check_clip_range(clip_range: object) -> float:
    """The x̂_0 clipping bound r in (0, CLIP_RANGE_MAX] (clip to [−r, r])."""
    value = _as_float(clip_range)
    if value is None or not 0.0 < value <= CLIP_RANGE_MAX:
        raise UsageError(f"The clip range must be a number in (0, {CLIP_RANGE_MAX:g}], got {clip_range!r}.")
    return value


def check_batch(batch: object) -> int:
    """Images per run: an integer in 1..BATCH_MAX."""
    n = _as_int(batch)
    if n is None or not 1 <= n <= BATCH_MAX:
        raise UsageError(f"Batch must be an integer between 1 and {BATCH_MAX}, got {batch!r}.")
    return n


def check_seed(seed: object, batch: int = 1) -> int:
    """A seed in 0..SEED_MAX; image i of a batch uses seed + i, which must stay within SEED_MAX too."""
    n = _as_int(seed)
    if n is None or not 0 <= n <= SEED_MAX:
        raise UsageError(f"The seed must be an integer between 0 and {SEED_MAX}, got {seed!r}.")
    if n + batch - 1 > SEED_MAX:
        raise UsageError(f"The seed plus the batch size must stay below {SEED_MAX}, got seed {n}.")
    return n


def check_strength(strength: object, has_init_image: bool = True) -> float:
    """img2img (SDEdit) strength in (0, 1]: the fraction of the schedule that is redrawn.

    Below 1 it needs an init image to start from (`has_init_image`).
    """
    value = _as_float(strength)
    if value is None or not 0.0 < value <= 1.0:
        raise UsageError(f"Strength must lie in (0, 1], got {strength!r}.")
    if value < 1.0 and not has_init_image:
        raise UsageError("A strength below 1 needs an init image to start from.")
    return value


def random_seed(rng: random.Random | None = None) -> int:
    """A fresh seed in 0..RANDOM_SEED_MAX (recorded in the metadata, so the image can be made again)."""
    return (rng or random.SystemRandom()).randint(0, RANDOM_SEED_MAX)
