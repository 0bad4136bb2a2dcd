"""Read the Shapes attributes back from pixels (numpy only, vectorised over a batch).

Steps for each image (all done for a whole batch at once):

1. background: per-channel median of the outer pixel ring, snapped to the nearest
   vocabulary background (robust to noise and to a shape that touches the border);
2. shape color: median of the pixels farthest from the background (distance above
   75% of the 99th percentile), snapped to the nearest vocabulary color;
3. soft coverage s = clip(⟨p − bg, fg − bg⟩ / ‖fg − bg‖², 0, 1) per pixel, the mask
   s > 0.5 and its largest 8-connected component (plus a 2-pixel fringe for the
   antialiased or blurred edge);
4. geometry from s: width/height = Σ of the column/row maxima (exact for antialiased
   edges), fill = area / (width · height) (square 1, circle π/4, triangle 1/2), the
   skewness of the row mass (0 for circle and square, −2√2/5 ≈ −0.566 for a triangle
   pointing up, y growing downwards), and the box centre.

Shape kind is the nearest template in (fill, skew); size compares the box side with
the midpoint between the small and large ranges of `core.shapes.SIZE_RANGES`;
position is the nearest anchor (quadrant anchors sit where the dataset places boxes).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from diffusion_studio.core import shapes
from diffusion_studio.errors import UsageError

MIN_CONTRAST = 40.0  # ‖fg − bg‖ in RGB units below which no shape is seen
MIN_AREA_FRACTION = 0.01  # largest component must cover at least 1% of the image
TRIANGLE_SKEW = -2.0 * math.sqrt(2.0) / 5.0  # skewness of the density 2y on [0, 1], negated
# (fill, skew) templates and the spread used to weigh the two features.
SHAPE_TEMPLATES: dict[str, tuple[float, float]] = {
    "square": (1.0, 0.0),
    "circle": (math.pi / 4.0, 0.0),
    "triangle": (0.5, TRIANGLE_SKEW),
}
_FILL_SCALE, _SKEW_SCALE = 0.1, 0.12


def _size_threshold() -> float:
    """Midpoint between the largest 'small' and the smallest 'large' box side."""
    return 0.5 * (shapes.SIZE_RANGES["small"][1] + shapes.SIZE_RANGES["large"][0])


def _position_anchors() -> dict[str, tuple[float, float]]:
    """Image centre, and for the quadrants the mean box centre the dataset draws there.

    A quadrant box is centred at 0.25 (or 0.75) but clamped to stay MARGIN inside the
    image, so large shapes sit nearer the middle; the anchor averages over sizes.
    """
    offsets = []
    for lo, hi in shapes.SIZE_RANGES.values():
        extent = 0.5 * (lo + hi)
        offsets.append(max(0.25, shapes.MARGIN + extent / 2))
    a = float(np.mean(offsets))
    return {
        "top left": (a, a), "top right": (1 - a, a),
        "bottom left": (a, 1 - a), "bottom right": (1 - a, 1 - a),
        "center": (0.5, 0.5),
    }


SIZE_THRESHOLD = _size_threshold()
POSITION_ANCHORS = _position_anchors()


@dataclass(frozen=True)
class Analysis:
    """What the analyzer read from one image; attributes are None when not valid."""

    valid: bool
    reason: str  # why the image is not valid ("" when it is)
    background: str | None
    color: str | None
    shape: str | None
    size: str | None
    position: str | None
    background_rgb: tuple[float, float, float]
    color_rgb: tuple[float, float, float]
    contrast: float  # ‖fg − bg‖
    fill: float  # area / (width · height) of the shape's box
    skew: float  # skewness of the row mass (y downwards)
    extent: float  # box side / image side
    center: tuple[float, float]  # box centre, fractions of the side (x, y)
    area_fraction: float  # soft area of the shape / image area
    component_share: float  # share of the mask in the largest connected component
    confidence: float  # 0..1: contrast, single-blob share and template fit combined

    def attributes(self) -> dict[str, str | None]:
        return {"color": self.color, "shape": self.shape, "size": self.size,
                "position": self.position, "background": self.background}

    def as_dict(self) -> dict:
        return asdict(self)


def _check(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise UsageError(f"The analyzer needs uint8 images [N, H, W, 3], got shape {images.shape}.")
    if images.dtype != np.uint8:
        raise UsageError(f"The analyzer needs uint8 images, got dtype {images.dtype}.")
    if min(images.shape[1:3]) < 8:
        raise UsageError(f"Images must be at least 8 pixels per side, got {images.shape[1]}x{images.shape[2]}.")
    return images


def _nearest(rgb: np.ndarray, table: dict[str, tuple[int, int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Index of the nearest table color for each row of rgb [N, 3], and its distance."""
    ref = np.asarray(list(table.values()), np.float32)  # [K, 3]
    d = np.linalg.norm(rgb[:, None, :] - ref[None], axis=-1)  # [N, K]
    return d.argmin(axis=1), d.min(axis=1)


def _shift_min(lab: np.ndarray, big: int) -> np.ndarray:
    """Minimum over each pixel's 3x3 neighbourhood (8-connectivity) of [N, H, W]."""
    p = np.pad(lab, ((0, 0), (1, 1), (1, 1)), constant_values=big)
    h, w = lab.shape[1:]
    out = lab.copy()
    for dy in range(3):
        for dx in range(3):
            np.minimum(out, p[:, dy:dy + h, dx:dx + w], out=out)
    return out


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    out = mask.copy()
    for _ in range(radius):
        p = np.pad(out, ((0, 0), (1, 1), (1, 1)))
        h, w = out.shape[1:]
        out = np.zeros_like(out)
        for dy in range(3):
            for dx in range(3):
                out |= p[:, dy:dy + h, dx:dx + w]
    return out


def largest_component(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Largest 8-connected component of each bool mask [N, H, W] and its share of the mask.

    Labels start as flat pixel indices and shrink to each component's minimum by
    3x3 min-propagation plus pointer jumping (label ← label of the pixel it names).
    """
    n, h, w = mask.shape
    big = h * w
    idx = np.broadcast_to(np.arange(big, dtype=np.int64).reshape(1, h, w), mask.shape)
    lab = np.where(mask, idx, big)
    rows = np.arange(n)[:, None]
    while True:
        new = np.where(mask, _shift_min(lab, big), big).reshape(n, big)
        jumped = new[rows, np.minimum(new, big - 1)]  # pointer jumping
        new = np.where(mask.reshape(n, big), np.minimum(new, jumped), big).reshape(n, h, w)
        if np.array_equal(new, lab):
            break
        lab = new
    flat = lab.reshape(n, big)
    counts = np.zeros((n, big + 1), np.int64)
    np.add.at(counts, (np.repeat(np.arange(n), big), flat.ravel()), 1)
    counts = counts[:, :big]
    best = counts.argmax(axis=1)
    keep = (flat == best[:, None]) & mask.reshape(n, big)
    total = np.maximum(mask.reshape(n, big).sum(axis=1), 1)
    share = keep.sum(axis=1) / total
    return keep.reshape(n, h, w), share


def analyze_batch(images: np.ndarray) -> list[Analysis]:
    """Analyze uint8 images [N, H, W, 3] (one shape on a plain background each)."""
    images = _check(images)
    n, h, w, _ = images.shape
    x = images.astype(np.float32)

    # 1. background: median of the outer ring (width 1 px per 32 px of side)
    b = max(1, min(h, w) // 32)
    ring = np.ones((h, w), bool)
    ring[b:h - b, b:w - b] = False
    bg = np.median(x[:, ring], axis=1)  # [N, 3]
    bg_idx, _ = _nearest(bg, shapes.BACKGROUNDS)

    # 2. shape color: pixels far from the background
    d = np.linalg.norm(x - bg[:, None, None, :], axis=-1)  # [N, H, W]
    d_hi = np.percentile(d.reshape(n, -1), 99, axis=1)
    core = d >= 0.75 * d_hi[:, None, None]
    fg = np.nanmedian(np.where(core[..., None], x, np.nan).reshape(n, -1, 3), axis=1)
    fg_idx, _ = _nearest(fg, shapes.COLORS)
    axis_v = fg - bg  # [N, 3]
    contrast = np.linalg.norm(axis_v, axis=-1)

    # 3. soft coverage along bg -> fg, hard mask, largest component plus fringe
    denom = np.maximum(contrast**2, 1e-6)[:, None, None]
    s = np.clip(np.einsum("nhwc,nc->nhw", x - bg[:, None, None, :], axis_v) / denom, 0.0, 1.0)
    keep, share = largest_component(s > 0.5)
    s_c = np.clip((s - 0.2) / 0.6, 0.0, 1.0) * _dilate(keep, 2)

    # 4. geometry
    col_max, row_max = s_c.max(axis=1), s_c.max(axis=2)  # [N, W], [N, H]
    width, height = col_max.sum(axis=1), row_max.sum(axis=1)
    area = s_c.sum(axis=(1, 2))
    eps = 1e-6
    fill = area / np.maximum(width * height, eps)
    xs, ys = np.arange(w) + 0.5, np.arange(h) + 0.5
    cx = (col_max * xs).sum(axis=1) / np.maximum(width, eps) / w
    cy = (row_max * ys).sum(axis=1) / np.maximum(height, eps) / h
    row_mass = s_c.sum(axis=2)  # [N, H]
    mu = (row_mass * ys).sum(axis=1) / np.maximum(area, eps)
    dev = ys[None, :] - mu[:, None]
    var = (row_mass * dev**2).sum(axis=1) / np.maximum(area, eps)
    skew = (row_mass * dev**3).sum(axis=1) / np.maximum(area, eps) / np.maximum(var, eps) ** 1.5
    extent = np.maximum(width / w, height / h)

    names = list(SHAPE_TEMPLATES)
    tmpl = np.asarray(list(SHAPE_TEMPLATES.values()))
    shape_d = np.hypot((fill[:, None] - tmpl[None, :, 0]) / _FILL_SCALE,
                       (skew[:, None] - tmpl[None, :, 1]) / _SKEW_SCALE)  # [N, 3]
    shape_idx = shape_d.argmin(axis=1)
    anchor_names = list(POSITION_ANCHORS)
    anchors = np.asarray(list(POSITION_ANCHORS.values()))
    pos_idx = np.hypot(cx[:, None] - anchors[None, :, 0], cy[:, None] - anchors[None, :, 1]).argmin(axis=1)

    bg_names, color_names = list(shapes.BACKGROUNDS), list(shapes.COLORS)
    results = []
    for i in range(n):
        area_frac = float(area[i] / (h * w))
        reason = ""
        if contrast[i] < MIN_CONTRAST:
            reason = "no shape: nothing differs from the background"
        elif keep[i].sum() < MIN_AREA_FRACTION * h * w:
            reason = "no shape: the largest blob is too small"
        valid = not reason
        fit = math.exp(-0.5 * float(shape_d[i].min()) ** 2)
        conf = min(1.0, float(contrast[i]) / 100.0) * float(share[i]) * (0.5 + 0.5 * fit) if valid else 0.0
        results.append(Analysis(
            valid=valid, reason=reason,
            background=bg_names[bg_idx[i]],
            color=color_names[fg_idx[i]] if valid else None,
            shape=names[shape_idx[i]] if valid else None,
            size=("large" if extent[i] > SIZE_THRESHOLD else "small") if valid else None,
            position=anchor_names[pos_idx[i]] if valid else None,
            background_rgb=tuple(float(v) for v in bg[i]),  # type: ignore[arg-type]
            color_rgb=tuple(float(v) for v in fg[i]),  # type: ignore[arg-type]
            contrast=float(contrast[i]), fill=float(fill[i]), skew=float(skew[i]),
            extent=float(extent[i]), center=(float(cx[i]), float(cy[i])),
            area_fraction=area_frac, component_share=float(share[i]), confidence=conf,
        ))
    return results


def analyze(image: np.ndarray) -> Analysis:
    """Analyze one uint8 image [H, W, 3]."""
    image = np.asarray(image)
    if image.ndim != 3:
        raise UsageError(f"analyze() needs one uint8 image [H, W, 3], got shape {image.shape}.")
    return analyze_batch(image[None])[0]
