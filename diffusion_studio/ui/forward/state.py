"""The Forward process workspace's state, headless (numpy and QtCore, no widgets): a source image
x_0 noised to x_t, with a change signal for each input.

Two ways to reach x_t from x_0, both with exact float64 DDPM coefficients from the core:

- closed form  x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε   (DDPM eq. 4), one fixed seeded ε, so
  scrubbing t only rescales the same two arrays and looks smooth;
- Markov chain x_t = √(1−β_t) x_{t−1} + √β_t z_t, t single steps of q(x_t | x_{t−1})
  (DDPM eq. 2). z_t is drawn from a generator seeded by (seed, t), so x_t does not depend
  on the path the slider took; states are cached every `stride` steps (bounded memory)
  and the latest one is kept, so moving the slider step by step costs one step.

The view (workspace.py) subscribes to `sourceChanged`, `scheduleChanged`, `tChanged` and
`noiseChanged` and reads everything it shows from here.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
from PySide6.QtCore import QObject, Signal

from diffusion_studio.core import png_meta
from diffusion_studio.core.forward import q_sample, q_step
from diffusion_studio.core.images import from_uint8, make_grid, to_uint8, upscale
from diffusion_studio.core.schedule import Schedule, ScheduleKind, make_schedule, parse_schedule_kind
from diffusion_studio.errors import UsageError
from diffusion_studio.ui.forward.coefficients import Coefficients
from diffusion_studio.ui.forward.sources import (
    DEFAULT_SIZE,
    Origin,
    ShapesOrigin,
    array_image,
    gray_rgb,
    load_origin,
    rgb_view,
)

T_MAX = 4000
MARKOV_CACHE_BYTES = 64 * 2**20  # memory for cached Markov-chain states
FILMSTRIP_FRAMES = 8


class ForwardState(QObject):
    """x_0, a schedule, t, the fixed ε and the cached Markov chain; every view reads from here."""

    sourceChanged = Signal()  # a new x_0, or x_0 in other channels (ε and the chain were redrawn for it)
    scheduleChanged = Signal()  # a new schedule or T (t is already clamped into 1..T; `tChanged` follows)
    tChanged = Signal(int)
    noiseChanged = Signal(int)  # the new seed of ε and of the Markov noise

    def __init__(self, source: np.ndarray | None = None, *, kind: str | ScheduleKind = "linear",
                 T: int = 1000, t: int = 1, seed: int = 0, source_name: str = "", channels: int = 3,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.seed = int(seed)
        if channels not in (1, 3):
            raise UsageError(f"x_0 has 1 (grey) or 3 (RGB) channels, got {channels}.")
        self.channels = int(channels)  # 1: x_0 is the source's luma, as a 1-channel model sees it
        self.schedule = make_schedule(kind, T)
        self._t = 1
        self.origin: Origin | None = None  # where x_0 came from (to rebuild it at another size)
        self.shapes_seed = self.seed  # the Shapes example shown last
        if source is None:
            self.origin = ShapesOrigin(self.shapes_seed)
            source, name = load_origin(self.origin, DEFAULT_SIZE)
            source_name = source_name or name
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

    @property
    def source_size(self) -> int:
        return int(self.source.shape[0])

    def set_t(self, t: int) -> None:
        t = int(t)
        if not 1 <= t <= self.T:
            raise UsageError(f"t must lie in 1..{self.T}, got {t}.")
        if t != self._t:
            self._t = t
            self.tChanged.emit(t)

    def set_schedule(self, kind: str | ScheduleKind, T: int) -> None:
        """A new schedule; t is clamped into 1..T and the Markov chain starts again."""
        kind = parse_schedule_kind(kind)
        if isinstance(T, bool) or not isinstance(T, (int, np.integer)) or not 2 <= T <= T_MAX:
            raise UsageError(f"T must be an integer between 2 and {T_MAX}, got {T!r}.")
        if kind is self.schedule.kind and int(T) == self.schedule.T:
            return
        self.schedule = make_schedule(kind, int(T))
        t_before, self._t = self._t, min(self._t, self.T)
        self._reset_chain()
        self.scheduleChanged.emit()
        if self._t != t_before:
            self.tChanged.emit(self._t)

    def use_schedule(self, schedule: Schedule) -> None:
        """Exactly this schedule (a model's own, e.g. diffusers' unscaled linear β ends); t is clamped."""
        if not 2 <= schedule.T <= T_MAX:
            raise UsageError(f"T must be an integer between 2 and {T_MAX}, got {schedule.T}.")
        if schedule is self.schedule:
            return
        self.schedule = schedule
        t_before, self._t = self._t, min(self._t, self.T)
        self._reset_chain()
        self.scheduleChanged.emit()
        if self._t != t_before:
            self.tChanged.emit(self._t)

    def set_channels(self, channels: int) -> None:
        """x_0 in 1 (grey: the source's luma) or 3 (RGB) channels; ε and the chain are redrawn."""
        if channels not in (1, 3):
            raise UsageError(f"x_0 has 1 (grey) or 3 (RGB) channels, got {channels}.")
        if channels == self.channels:
            return
        self.channels = int(channels)
        self._set_source_array(self.rgb_source)
        self.sourceChanged.emit()

    def set_source(self, image: np.ndarray, name: str = "", origin: Origin | None = None) -> None:
        """A new x_0 (uint8 [H, W, 3]; grey when `channels` is 1); ε and the chain are redrawn for its shape."""
        self._set_source_array(image)
        self.source_name = name
        self.origin = origin
        self.sourceChanged.emit()

    def load(self, origin: Origin, size: int | None = None) -> None:
        """x_0 from `origin` at `size` (default: the current size). UsageError with one sentence,
        and nothing changes, if it cannot be read."""
        image, name = load_origin(origin, self.source_size if size is None else size)
        if isinstance(origin, ShapesOrigin):
            self.shapes_seed = origin.seed
        self.set_source(image, name, origin)

    def new_shapes_example(self, size: int | None = None) -> None:
        """The next Shapes example as x_0 (at `size`, default the current size)."""
        self.load(ShapesOrigin(self.shapes_seed + 1), size)

    def set_source_size(self, size: int) -> None:
        """Rebuild x_0 from where it came from at another size (a plain array is resized)."""
        if size == self.source_size:
            return
        if self.origin is None:
            self.set_source(array_image(self.rgb_source, size), self.source_name)
        else:
            self.load(self.origin, size)

    def new_noise(self, seed: int | None = None) -> int:
        """Draw another ε (and Markov noise): the given seed, or the next one. Returns the seed."""
        self.seed = self.seed + 1 if seed is None else int(seed)
        self._draw_eps()
        self.noiseChanged.emit(self.seed)
        return self.seed

    def _set_source_array(self, image: np.ndarray) -> None:
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise UsageError(f"The source must be a uint8 RGB image [H, W, 3], got {image.dtype} {image.shape}.")
        self.rgb_source = np.ascontiguousarray(image)  # as loaded, to go back from grey to RGB
        self.source = gray_rgb(image) if self.channels == 1 else self.rgb_source  # shown: R = G = B if grey
        x_0 = from_uint8(self.source)  # float32 [3, H, W] in [-1, 1]
        self.x_0 = np.ascontiguousarray(x_0[:1]) if self.channels == 1 else x_0  # [C, H, W]
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
        """Closed form x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε with the fixed ε; float32 [C, H, W]."""
        return q_sample(self.schedule, self.x_0, self._t if t is None else t, self.eps)

    def markov_noise(self, t: int) -> np.ndarray:
        """z_t of the Markov step into x_t: a pure function of (seed, t)."""
        return np.random.default_rng([self.seed, 1, t]).standard_normal(self.x_0.shape, dtype=np.float32)

    def markov_x_t(self, t: int | None = None) -> np.ndarray:
        """x_t after t single steps q(x_t | x_{t−1}) from x_0; float32 [C, H, W]."""
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
        """The closed-form x_t as uint8 [H, W, 3] (values outside [-1, 1] clipped; grey: R = G = B)."""
        return rgb_view(to_uint8(self.x_t(t)))

    def markov_image(self, t: int | None = None) -> np.ndarray:
        return rgb_view(to_uint8(self.markov_x_t(t)))

    def filmstrip(self, count: int = FILMSTRIP_FRAMES, gap: int = 2) -> np.ndarray:
        """x_0 and x_t at `count` evenly spaced t ∈ [1, T] side by side; uint8 [H, W', 3]."""
        return filmstrip_image([self.source] + [self.image(t) for t in filmstrip_timesteps(self.T, count)], gap)


def filmstrip_timesteps(T: int, count: int) -> list[int]:
    """`count` evenly spaced timesteps from T/count to T (the last is always T)."""
    if count < 1:
        raise UsageError(f"A filmstrip needs at least one frame, got {count}.")
    return sorted({max(1, round(T * (i + 1) / count)) for i in range(count)})


def filmstrip_image(tiles: list[np.ndarray], gap: int = 2, fill: int = 255) -> np.ndarray:
    """Equal-size uint8 tiles [H, W, 3] side by side, `gap` pixels of `fill` between them."""
    return make_grid(np.stack(tiles), cols=len(tiles), padding=gap, fill=fill)


def save_png(image: np.ndarray, path: Path | str, scale: int = 1) -> Path:
    """Write a uint8 image as PNG atomically (core.files), nearest-neighbour upscaled by `scale`."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise UsageError(f"Save the filmstrip as .png, not '{path.suffix or path.name}'.")
    return png_meta.write_png(path, upscale(image, scale))
