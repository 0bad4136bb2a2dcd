"""The recorded reverse-diffusion trajectory of one run, and its export (GIF, PNG filmstrip).

Headless. Every step of a run becomes a `Frame`; long runs (DDPM with 1000 steps and a
batch) are thinned by doubling a stride so memory stays bounded, always keeping the
first and the final step.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from diffusion_studio.core.files import atomic_write_bytes
from diffusion_studio.core.images import make_grid, to_uint8, upscale
from diffusion_studio.errors import UsageError
from diffusion_studio.ui.generate.previews import Frame, PreviewMode, flatten_rgb, render

DEFAULT_MAX_FRAMES = 256
FILMSTRIP_MAX_FRAMES = 16
EXPORT_SCALE = 4  # the model's images are tiny: exports are upscaled (nearest neighbour)


class Trajectory:
    """Frames of one run in step order, at most `max_frames` of them."""

    def __init__(self, max_frames: int = DEFAULT_MAX_FRAMES,
                 decoder: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        """`decoder`: a latent run's VAE, ẑ₀ [N,C,h,w] -> images [N,3,H,W] in [-1, 1]; frames keep their
        latents (`Frame.latent`, small) and are decoded on demand (`decode`), not stored decoded."""
        if max_frames < 2:
            raise ValueError(f"A trajectory keeps at least 2 frames, got {max_frames}.")
        self.decoder = decoder
        self.max_frames = max_frames
        self.stride = 1
        self._frames: list[Frame] = []
        self._latest: Frame | None = None

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> Frame:
        return self.frames[i]

    @property
    def frames(self) -> list[Frame]:
        """Kept frames in step order; the latest step is always the last one."""
        return self._frames + ([self._latest] if self._latest is not None else [])

    def can_decode(self, frame: Frame) -> bool:
        """Whether `frame` shows a preview that `decode` can replace with the full VAE decode."""
        return self.decoder is not None and frame.latent is not None

    def decode(self, frame: Frame) -> Frame:
        """The frame with x̂₀ = D(ẑ₀ / scaling_factor), the full decode (slow: call it off the GUI thread)."""
        if self.decoder is None or frame.latent is None:
            return frame
        images = to_uint8(np.clip(np.asarray(self.decoder(frame.latent), np.float32), -1.0, 1.0))
        return replace(frame, x0_pred=images, latent=None)

    def keeps(self, index: int) -> bool:
        """Whether the step `index` would be kept now (the latest step is always remembered too)."""
        return index % self.stride == 0

    def record(self, frame: Frame) -> None:
        """Keep the frame if its index falls on the stride; always remember the latest."""
        self._latest = None
        if frame.index % self.stride == 0:
            self._frames.append(frame)
        else:
            self._latest = frame
        if len(self._frames) > self.max_frames - 1:
            self.stride *= 2
            self._frames = [f for f in self._frames if f.index % self.stride == 0]
            if frame.index % self.stride != 0:
                self._latest = frame


def _upscaled(rgba: np.ndarray, scale: int) -> np.ndarray:
    return upscale(flatten_rgb(rgba), scale)


def _save(images: list[Image.Image], path: Path, **params: object) -> None:
    """Encode one image (PNG) or an animation (GIF) in memory, then write the file atomically."""
    fmt = "GIF" if path.suffix.lower() == ".gif" else "PNG"
    buffer = io.BytesIO()
    try:
        first, rest = images[0], images[1:]
        if rest:
            first.save(buffer, format=fmt, save_all=True, append_images=rest, **params)
        else:
            first.save(buffer, format=fmt, **params)
    except (OSError, ValueError) as exc:
        raise UsageError(f"Cannot encode {path.name} as {fmt} ({exc}).") from None
    atomic_write_bytes(path, buffer.getvalue())


def export_gif(
    trajectory: Trajectory,
    path: Path | str,
    mode: PreviewMode = PreviewMode.X0,
    *,
    scale: int = EXPORT_SCALE,
    frame_ms: int = 60,
    hold_last_ms: int = 1500,
) -> Path:
    """An animated GIF of every recorded step in `mode`; the final image is held."""
    path = Path(path)
    if len(trajectory) == 0:
        raise UsageError("There is no trajectory to export yet; generate an image first.")
    if scale < 1:
        raise UsageError(f"The export scale must be at least 1, got {scale}.")
    images = [Image.fromarray(_upscaled(render(f, mode), scale)) for f in trajectory.frames]
    durations = [frame_ms] * (len(images) - 1) + [hold_last_ms]
    # Pillow takes a list of durations for an animation, a single number for one frame.
    _save(images, path, duration=durations if len(images) > 1 else hold_last_ms, loop=0, disposal=1)
    return path


def filmstrip(
    trajectory: Trajectory,
    mode: PreviewMode = PreviewMode.X0,
    *,
    max_frames: int = FILMSTRIP_MAX_FRAMES,
    scale: int = EXPORT_SCALE,
    gap: int = 4,
) -> np.ndarray:
    """RGB uint8 strip of up to `max_frames` evenly spaced steps (first and last included)."""
    if len(trajectory) == 0:
        raise UsageError("There is no trajectory to export yet; generate an image first.")
    count = min(max_frames, len(trajectory))
    picks = np.unique(np.round(np.linspace(0, len(trajectory) - 1, count)).astype(int))
    tiles = np.stack([_upscaled(render(trajectory[int(i)], mode), scale) for i in picks])
    return make_grid(tiles, cols=len(tiles), padding=gap, fill=255)


def export_filmstrip(
    trajectory: Trajectory, path: Path | str, mode: PreviewMode = PreviewMode.X0, **kwargs: int
) -> Path:
    """Write `filmstrip(...)` as a PNG."""
    path = Path(path)
    _save([Image.fromarray(filmstrip(trajectory, mode, **kwargs))], path)
    return path


def export_trajectory(trajectory: Trajectory, path: Path | str, mode: PreviewMode) -> Path:
    """GIF for a `.gif` path, a PNG filmstrip for `.png`; anything else is a usage error."""
    suffix = Path(path).suffix.lower()
    if suffix == ".gif":
        return export_gif(trajectory, path, mode)
    if suffix == ".png":
        return export_filmstrip(trajectory, path, mode)
    raise UsageError(f"Export the trajectory as .gif or .png, not '{suffix or path}'.")
