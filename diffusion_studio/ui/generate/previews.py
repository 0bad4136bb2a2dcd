"""What the preview shows for one sampling step: x̂₀, x_t, ε̂ or all three side by side.

Headless (numpy only). The worker thread turns every `core.sampling_loop.Step` into a
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
from diffusion_studio.core.sampling_loop import Step

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
    """One recorded step as display-ready uint8 images [N, H, W, C] (C = 1 or 3).

    A step runs the network on the sample at `t` and moves it to `t_prev`: `x_prev` is the
    sample at t_prev (x_0 after the last step), `x0_pred` and `eps` are what the network
    predicted at t. Each picture is captioned with its own timestep (`caption`).
    """

    index: int  # 0-based step index
    count: int  # number of steps in the run
    t: int  # the paper's timestep the network saw (of x0_pred and eps)
    t_prev: int  # the timestep of x_prev, the sample after this step (0: the final x_0)
    x_prev: np.ndarray
    x0_pred: np.ndarray
    eps: np.ndarray
    # A latent run's step: x0_pred is the linear-map preview and this is the latent ẑ₀ [N,C,h,w]
    # (small) the trajectory decodes with the VAE on demand; None when x0_pred is already a full image.
    latent: np.ndarray | None = None

    @property
    def is_last(self) -> bool:
        return self.index == self.count - 1

    def caption(self, mode: PreviewMode = PreviewMode.X0) -> str:
        """"x̂₀ predicted at t = 731 · step 12/50": what `mode` shows, at its timestep."""
        step = f"step {self.index + 1}/{self.count}"
        sample = f"x_t at t = {self.t_prev}" if self.t_prev else "x₀ at t = 0"
        predicted = f"predicted at t = {self.t}"
        if mode is PreviewMode.XT:
            return f"{sample} · {step}"
        if mode is PreviewMode.EPS:
            return f"ε̂ {predicted} · {step}"
        if mode is PreviewMode.X0:  # the last frame shows the final sample itself as x̂₀
            return f"{sample if self.is_last else 'x̂₀ ' + predicted} · {step}"
        return f"{sample} · {'ε̂' if self.is_last else 'x̂₀, ε̂'} {predicted} · {step}"


def eps_to_uint8(eps: np.ndarray) -> np.ndarray:
    """ε̂ [N, C, H, W] -> uint8 [N, H, W, C], mapping ±EPS_RANGE σ onto 0…255."""
    return to_uint8(np.clip(np.asarray(eps, np.float32) / EPS_RANGE, -1.0, 1.0))


def frame_from_step(step: Step) -> Frame:
    """A `core.sampling_loop.Step` (x_prev, x0_pred, eps in [-1, 1] float32 NCHW) -> Frame.

    After the last step x_prev *is* the final sample x_0, so the last frame shows it as x̂₀
    too: the view then shows exactly the image that is saved.
    """
    x_prev = to_uint8(np.clip(step.x_prev, -1.0, 1.0))
    last = step.index == step.count - 1
    return Frame(
        index=int(step.index),
        count=int(step.count),
        t=int(step.t),
        t_prev=int(step.t_prev),
        x_prev=x_prev,
        x0_pred=x_prev if last else to_uint8(np.clip(step.x0_pred, -1.0, 1.0)),
        eps=eps_to_uint8(step.eps),
        latent=None if last or getattr(step, "decoded", True) else getattr(step, "latent_x0_pred", None),
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
    """Place equal-size RGBA panels left to right with transparent gaps."""
    return make_grid(np.stack(panels), cols=len(panels), padding=gap, fill=0)


def render(frame: Frame, mode: PreviewMode) -> np.ndarray:
    """The RGBA picture [H, W, 4] of a frame in the given preview mode."""
    if mode is PreviewMode.X0:
        return tile(frame.x0_pred)
    if mode is PreviewMode.XT:
        return tile(frame.x_prev)
    if mode is PreviewMode.EPS:
        return tile(frame.eps)
    return hstack([tile(frame.x_prev), tile(frame.x0_pred), tile(frame.eps)])


def flatten_rgb(rgba: np.ndarray, background: tuple[int, int, int] = (32, 32, 32)) -> np.ndarray:
    """Composite an RGBA picture over a solid background -> RGB uint8 (for files)."""
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    bg = np.asarray(background, np.float32)
    rgb = rgba[..., :3].astype(np.float32) * alpha + bg * (1.0 - alpha)
    return np.round(rgb).astype(np.uint8)
