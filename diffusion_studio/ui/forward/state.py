"""The Forward process workspace, headless: a source image x_0 noised to x_t (numpy only).

Two ways to reach x_t from x_0, both with exact float64 DDPM coefficients from the core:

- closed form  x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε   (DDPM eq. 4), one fixed seeded ε, so
  scrubbing t only rescales the same two arrays and looks smooth;
- Markov chain x_t = √(1−β_t) x_{t−1} + √β_t z_t, t single steps of q(x_t | x_{t−1})
  (DDPM eq. 2). z_t is drawn from a generator seeded by (seed, t), so x_t does not depend
  on the path the slider took; states are cached every `stride` steps (bounded memory)
  and the latest one is kept, so moving the slider step by step costs one step.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from diffusion_studio.core import shapes
from diffusion_studio.core.forward import q_sample, q_step
from diffusion_studio.core.images import from_uint8, to_uint8
from diffusion_studio.core.schedule import Schedule, ScheduleKind, make_schedule, parse_schedule_kind
from diffusion_studio.errors import UsageError

SOURCE_SIZES: tuple[int, ...] = (32, 64, 128, 256)
DEFAULT_SIZE = 64
T_MAX = 4000
MARKOV_CACHE_BYTES = 64 * 2**20  # memory for cached Markov-chain states
FILMSTRIP_FRAMES = 8


@dataclass(frozen=True)
class Coefficients:
    """Every schedule quantity at one timestep t (float64, straight from the Schedule)."""

    t: int
    T: int
    beta: float  # β_t
    alpha: float  # α_t = 1 − β_t
    alpha_bar: float  # ᾱ_t = ∏_{i≤t} α_i
    alpha_bar_prev: float  # ᾱ_{t−1}
    sqrt_alpha_bar: float  # √ᾱ_t
    sqrt_one_minus_alpha_bar: float  # √(1 − ᾱ_t)
    snr: float  # ᾱ_t / (1 − ᾱ_t)
    beta_tilde: float  # β̃_t = (1 − ᾱ_{t−1}) / (1 − ᾱ_t) · β_t  (DDPM eq. 7)

    @classmethod
    def at(cls, schedule: Schedule, t: int) -> Coefficients:
        if not 1 <= t <= schedule.T:
            raise UsageError(f"t must lie in 1..{schedule.T}, got {t}.")
        i = t - 1
        return cls(
            t=t,
            T=schedule.T,
            beta=float(schedule.betas[i]),
            alpha=float(schedule.alphas[i]),
            alpha_bar=float(schedule.alphas_cumprod[i]),
            alpha_bar_prev=float(schedule.alphas_cumprod_prev[i]),
            sqrt_alpha_bar=float(schedule.sqrt_alphas_cumprod[i]),
            sqrt_one_minus_alpha_bar=float(schedule.sqrt_one_minus_alphas_cumprod[i]),
            snr=float(schedule.snr[i]),
            beta_tilde=float(schedule.posterior_variance[i]),
        )


def format_value(value: float) -> str:
    """Seven significant digits, plain ASCII (so the text parses back with float())."""
    return f"{value:.7g}"


def coefficient_rows(c: Coefficients) -> list[tuple[str, str, str, str]]:
    """(key, symbol as HTML, value text, meaning) for every coefficient shown on screen."""
    return [
        ("beta", "β<sub>t</sub>", format_value(c.beta), "noise added by step t"),
        ("alpha", "α<sub>t</sub> = 1 − β<sub>t</sub>", format_value(c.alpha), "signal kept by step t"),
        ("alpha_bar", "ᾱ<sub>t</sub> = ∏ α<sub>i</sub>", format_value(c.alpha_bar), "signal variance left"),
        ("sqrt_alpha_bar", "√ᾱ<sub>t</sub>", format_value(c.sqrt_alpha_bar), "weight of x<sub>0</sub>"),
        ("sqrt_one_minus_alpha_bar", "√(1 − ᾱ<sub>t</sub>)", format_value(c.sqrt_one_minus_alpha_bar),
         "weight of ε"),
        ("snr", "SNR = ᾱ<sub>t</sub> / (1 − ᾱ<sub>t</sub>)", format_value(c.snr), "signal-to-noise ratio"),
        ("beta_tilde", "β̃<sub>t</sub> = (1 − ᾱ<sub>t−1</sub>)/(1 − ᾱ<sub>t</sub>) β<sub>t</sub>",
         format_value(c.beta_tilde), "posterior variance"),
    ]


def formula_html(c: Coefficients) -> str:
    """The closed form with the numbers of this t substituted (DDPM eq. 4)."""
    return (
        f"x<sub>t</sub> = √ᾱ<sub>t</sub> x<sub>0</sub> + √(1 − ᾱ<sub>t</sub>) ε"
        f" = {c.sqrt_alpha_bar:.4f} · x<sub>0</sub> + {c.sqrt_one_minus_alpha_bar:.4f} · ε"
        f"&nbsp;&nbsp;&nbsp;(t = {c.t} of {c.T})"
    )


def markov_html(c: Coefficients) -> str:
    """One Markov step q(x_t | x_{t−1}) = N(√(1−β_t) x_{t−1}, β_t I) with this t's numbers (eq. 2)."""
    return (
        f"q(x<sub>t</sub> | x<sub>t−1</sub>) = N(√(1 − β<sub>t</sub>) x<sub>t−1</sub>, β<sub>t</sub> I)"
        f" = N({math.sqrt(c.alpha):.4f} · x<sub>t−1</sub>, {c.beta:.4g} · I)"
    )


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two arrays over all their elements (0 if one is constant)."""
    x = np.asarray(a, np.float64).ravel()
    y = np.asarray(b, np.float64).ravel()
    x, y = x - x.mean(), y - y.mean()
    denom = math.sqrt(float(x @ x) * float(y @ y))
    return float(x @ y) / denom if denom > 0 else 0.0


# --- source images -----------------------------------------------------------------------------
def fit_image(image: Image.Image, size: int) -> np.ndarray:
    """Resize so the shorter side is `size`, centre-crop to size × size; uint8 RGB [H, W, 3]."""
    if size < 8:
        raise UsageError(f"The image size must be at least 8 pixels, got {size}.")
    if image.mode in ("RGBA", "LA", "P"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)  # transparency onto white
    fitted = ImageOps.fit(image.convert("RGB"), (size, size), Image.Resampling.LANCZOS, centering=(0.5, 0.5))
    return np.asarray(fitted, dtype=np.uint8).copy()


def load_image(path: Path | str, size: int) -> np.ndarray:
    """An image file (PNG, JPEG, …) resized and centre-cropped; UsageError if unreadable."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            return fit_image(ImageOps.exif_transpose(im), size)
    except FileNotFoundError:
        raise UsageError(f"There is no image file {path}.") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise UsageError(f"Cannot read {path.name} as an image ({exc}).") from None


def array_image(image: np.ndarray, size: int) -> np.ndarray:
    """A uint8 [H, W, C] array (C = 1, 3 or 4) as a size × size RGB source."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise UsageError(f"Expected a uint8 image [H, W, C], got {image.dtype} {image.shape}.")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    return fit_image(Image.fromarray(np.ascontiguousarray(image)), size)


def shapes_example(seed: int, size: int) -> tuple[np.ndarray, str]:
    """A Shapes example (image, caption) drawn from `seed`."""
    image, caption, _spec = shapes.sample_example(np.random.default_rng(seed), size)
    return image, caption


# --- the state ---------------------------------------------------------------------------------
class ForwardState:
    """x_0, a schedule, t, the fixed ε and the cached Markov chain; every view reads from here."""

    def __init__(self, source: np.ndarray | None = None, *, kind: str | ScheduleKind = "linear",
                 T: int = 1000, t: int = 1, seed: int = 0, source_name: str = "") -> None:
        self.seed = int(seed)
        self.schedule = make_schedule(kind, T)
        self._t = 1
        if source is None:
            source, caption = shapes_example(self.seed, DEFAULT_SIZE)
            source_name = source_name or f"Shapes: {caption}"
        self.source_name = source_name
        self._set_source_array(source)
        self.set_t(t)

    # --- inputs --------------------------------------------------------------------------
    @property
    def t(self) -> int:
        return self._t

    @property
    def T(self) -> int:
        return self.schedule.T

    @property
    def kind(self) -> ScheduleKind:
        return self.schedule.kind

    def set_t(self, t: int) -> None:
        t = int(t)
        if not 1 <= t <= self.T:
            raise UsageError(f"t must lie in 1..{self.T}, got {t}.")
        self._t = t

    def set_schedule(self, kind: str | ScheduleKind, T: int) -> None:
        """A new schedule; t is clamped into 1..T and the Markov chain starts again."""
        kind = parse_schedule_kind(kind)
        if isinstance(T, bool) or not isinstance(T, (int, np.integer)) or not 2 <= T <= T_MAX:
            raise UsageError(f"T must be an integer between 2 and {T_MAX}, got {T!r}.")
        if kind is self.schedule.kind and int(T) == self.schedule.T:
            return
        self.schedule = make_schedule(kind, int(T))
        self._t = min(self._t, self.T)
        self._reset_chain()

    def set_source(self, image: np.ndarray, name: str = "") -> None:
        """A new x_0 (uint8 [H, W, 3]); ε and the chain are redrawn for its shape."""
        self.source_name = name
        self._set_source_array(image)

    def new_noise(self, seed: int | None = None) -> int:
        """Draw another ε (and Markov noise): the given seed, or the next one. Returns the seed."""
        self.seed = self.seed + 1 if seed is None else int(seed)
        self._draw_eps()
        return self.seed

    def _set_source_array(self, image: np.ndarray) -> None:
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise UsageError(f"The source must be a uint8 RGB image [H, W, 3], got {image.dtype} {image.shape}.")
        self.source = np.ascontiguousarray(image)
        self.x_0 = from_uint8(self.source)  # float32 [3, H, W] in [-1, 1]
        self._draw_eps()

    def _draw_eps(self) -> None:
        self.eps = np.random.default_rng([self.seed, 0]).standard_normal(self.x_0.shape, dtype=np.float32)
        self._reset_chain()

    def _reset_chain(self) -> None:
        per_state = self.x_0.nbytes
        self.stride = max(1, math.ceil(self.T * per_state / MARKOV_CACHE_BYTES))
        self._chain: dict[int, np.ndarray] = {0: self.x_0}  # t -> x_t, t a multiple of stride
        self._latest: tuple[int, np.ndarray] = (0, self.x_0)

    # --- outputs -------------------------------------------------------------------------
    def coefficients(self, t: int | None = None) -> Coefficients:
        return Coefficients.at(self.schedule, self._t if t is None else t)

    def x_t(self, t: int | None = None) -> np.ndarray:
        """Closed form x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε with the fixed ε; float32 [3, H, W]."""
        return q_sample(self.schedule, self.x_0, self._t if t is None else t, self.eps)

    def markov_noise(self, t: int) -> np.ndarray:
        """z_t of the Markov step into x_t: a pure function of (seed, t)."""
        return np.random.default_rng([self.seed, 1, t]).standard_normal(self.x_0.shape, dtype=np.float32)

    def markov_x_t(self, t: int | None = None) -> np.ndarray:
        """x_t after t single steps q(x_t | x_{t−1}) from x_0; float32 [3, H, W]."""
        x = self.markov_advance(self._t if t is None else int(t), math.inf)
        if x is None:  # cannot happen: an unlimited budget always arrives
            raise RuntimeError("The Markov chain stopped early.")
        return x

    def markov_advance(self, t: int, budget_s: float) -> np.ndarray | None:
        """Walk the chain towards x_t for at most `budget_s` seconds (at least one step).

        Returns x_t once reached, else None (call again to continue from where it stopped);
        this keeps the GUI responsive while a long chain of a large image is computed.
        """
        if not 0 <= t <= self.T:
            raise UsageError(f"t must lie in 0..{self.T}, got {t}.")
        deadline = time.perf_counter() + budget_s
        start, x = self._latest
        if start > t:
            start, x = 0, self.x_0
        k = (t // self.stride) * self.stride  # the nearest cached state at or below t, if closer
        while k > start and k not in self._chain:
            k -= self.stride
        if k > start:
            start, x = k, self._chain[k]
        for s in range(start + 1, t + 1):
            x = q_step(self.schedule, x, s, self.markov_noise(s))  # eq. 2
            if s % self.stride == 0:
                self._chain[s] = x
            if s < t and time.perf_counter() > deadline:
                self._latest = (s, x)
                return None
        self._latest = (t, x)
        return x

    def markov_position(self) -> int:
        """The t of the newest Markov state computed so far."""
        return self._latest[0]

    def image(self, t: int | None = None) -> np.ndarray:
        """The closed-form x_t as uint8 [H, W, 3] (values outside [-1, 1] clipped)."""
        return to_uint8(self.x_t(t))

    def markov_image(self, t: int | None = None) -> np.ndarray:
        return to_uint8(self.markov_x_t(t))

    def filmstrip(self, count: int = FILMSTRIP_FRAMES, gap: int = 2) -> np.ndarray:
        """x_0 and x_t at `count` evenly spaced t ∈ [1, T] side by side; uint8 [H, W', 3]."""
        return filmstrip_image([self.source] + [self.image(t) for t in filmstrip_timesteps(self.T, count)], gap)


def filmstrip_timesteps(T: int, count: int) -> list[int]:
    """`count` evenly spaced timesteps from T/count to T (the last is always T)."""
    if count < 1:
        raise UsageError(f"A filmstrip needs at least one frame, got {count}.")
    return sorted({max(1, round(T * (i + 1) / count)) for i in range(count)})


def filmstrip_image(tiles: list[np.ndarray], gap: int = 2, fill: int = 255) -> np.ndarray:
    h = max(t.shape[0] for t in tiles)
    spacer = np.full((h, gap, 3), fill, np.uint8)
    parts: list[np.ndarray] = []
    for i, tile in enumerate(tiles):
        if i and gap:
            parts.append(spacer)
        parts.append(tile)
    return np.concatenate(parts, axis=1)


def save_png(image: np.ndarray, path: Path | str, scale: int = 1) -> Path:
    """Write a uint8 image as PNG atomically (nearest-neighbour upscaled by `scale`)."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise UsageError(f"Save the filmstrip as .png, not '{path.suffix or path.name}'.")
    if scale > 1:
        image = np.repeat(np.repeat(image, scale, axis=0), scale, axis=1)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        Image.fromarray(image).save(tmp, format="PNG")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UsageError(f"Cannot write {path} ({exc.strerror or exc}).") from None
    return path
