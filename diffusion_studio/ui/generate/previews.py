"""What the preview shows for one sampling step: x̂₀, x_t, ε̂ or all three side by side.

Headless (numpy only). The worker thread turns every `core.sampling.Step` into a
`Frame` of uint8 pictures; the GUI thread renders a frame for the chosen mode into an
RGBA array (gaps between tiles are transparent so the window's palette shows through)
and only then builds a QImage.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

import numpy as np

from diffusion_studio.core.images import make_grid, to_uint8
from diffusion_studio.core.sampling import Step

# ε ~ N(0, I): show ±EPS_RANGE standard deviations over the full grey range.
EPS_RANGE = 3.0
TILE_GAP = 2  # transparent pixels between tiles of a batch grid
PANEL_GAP = 6  # transparent pixels between the side-by-side panels


class PreviewMode(str, Enum):
    X0 = "x0"  # predicted clean image x̂₀ (default: x_t looks like static for most of the run)
    XT = "x_t"  # the current noisy sample
    EPS = "eps"  # the predicted noise ε̂
    SIDE = "side"  # x_t | x̂₀ | ε̂

    @property
    def label(self) -> str:
        return _LABELS[self]


_LABELS = {
    PreviewMode.X0: "Predicted x̂₀",
    PreviewMode.XT: "Noisy x_t",
    PreviewMode.EPS: "Predicted noise ε̂",
    PreviewMode.SIDE: "Side by side (x_t · x̂₀ · ε̂)",
}


@dataclass(frozen=True)
class Frame:
    """One recorded step as display-ready uint8 images [N, H, W, C] (C = 1 or 3)."""

    index: int  # 0-based step index
    count: int  # number of steps in the run
    t: int  # the paper's timestep of x_t
    x_t: np.ndarray
    x0_pred: np.ndarray
    eps: np.ndarray

    @property
    def caption(self) -> str:
        return f"t = {self.t} · step {self.index + 1}/{self.count}"


def eps_to_uint8(eps: np.ndarray) -> np.ndarray:
    """ε̂ [N, C, H, W] -> uint8 [N, H, W, C], mapping ±EPS_RANGE σ onto 0…255."""
    return to_uint8(np.clip(np.asarray(eps, np.float32) / EPS_RANGE, -1.0, 1.0))


def frame_from_step(step: Step) -> Frame:
    """A `core.sampling.Step` (x_t, x0_pred, eps in [-1, 1] float32 NCHW) -> Frame.

    After the last step x_t *is* the final sample x_0, so the last frame shows it as x̂₀
    too: the view then shows exactly the image that is saved.
    """
    x_t = to_uint8(np.clip(step.x_t, -1.0, 1.0))
    last = step.index == step.count - 1
    return Frame(
        index=int(step.index),
        count=int(step.count),
        t=int(step.t),
        x_t=x_t,
        x0_pred=x_t if last else to_uint8(np.clip(step.x0_pred, -1.0, 1.0)),
        eps=eps_to_uint8(step.eps),
    )


def grid_columns(n: int) -> int:
    """Columns of a near-square grid for n tiles (1→1, 2→2, 4→2, 6→3, 9→3, 16→4)."""
    if n < 1:
        raise ValueError(f"A grid needs at least one image, got {n}.")
    return int(math.ceil(math.sqrt(n)))


def to_rgba(images: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W, C] with C in {1, 3, 4} -> opaque RGBA [N, H, W, 4]."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4) or images.dtype != np.uint8:
        raise ValueError(f"Expected uint8 images [N, H, W, C], got {images.dtype} {images.shape}.")
    if images.shape[-1] == 4:
        return images
    rgb = np.repeat(images, 3, axis=-1) if images.shape[-1] == 1 else images
    alpha = np.full(rgb.shape[:-1] + (1,), 255, np.uint8)
    return np.concatenate([rgb, alpha], axis=-1)


def tile(images: np.ndarray, columns: int | None = None, gap: int = TILE_GAP) -> np.ndarray:
    """uint8 [N, H, W, C] -> one RGBA [H', W', 4] near-square grid with transparent gaps."""
    rgba = to_rgba(images)
    return make_grid(rgba, columns or grid_columns(rgba.shape[0]), padding=gap, fill=0)


def hstack(panels: list[np.ndarray], gap: int = PANEL_GAP) -> np.ndarray:
    """Place RGBA panels of equal height left to right with transparent gaps."""
    height = max(p.shape[0] for p in panels)
    spacer = np.zeros((height, gap, 4), np.uint8)
    parts: list[np.ndarray] = []
    for i, panel in enumerate(panels):
        if i:
            parts.append(spacer)
        parts.append(panel)
    return np.concatenate(parts, axis=1)


def render(frame: Frame, mode: PreviewMode) -> np.ndarray:
    """The RGBA picture [H, W, 4] of a frame in the given preview mode."""
    if mode is PreviewMode.X0:
        return tile(frame.x0_pred)
    if mode is PreviewMode.XT:
        return tile(frame.x_t)
    if mode is PreviewMode.EPS:
        return tile(frame.eps)
    return hstack([tile(frame.x_t), tile(frame.x0_pred), tile(frame.eps)])


def flatten_rgb(rgba: np.ndarray, background: tuple[int, int, int] = (32, 32, 32)) -> np.ndarray:
    """Composite an RGBA picture over a solid background -> RGB uint8 (for files)."""
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    bg = np.asarray(background, np.float32)
    rgb = rgba[..., :3].astype(np.float32) * alpha + bg * (1.0 - alpha)
    return np.round(rgb).astype(np.uint8)
