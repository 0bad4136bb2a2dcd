"""Two-object images: find both shapes, read each one's color and shape, score attribute binding.

For each image (numpy only):

1. background: the single-object analyzer's ring median, snapped to the vocabulary;
2. foreground: pixels farther than `FOREGROUND_DISTANCE` RGB units from that background;
   its two largest 8-connected components are the objects (blobs under
   `MIN_OBJECT_FRACTION` of the image do not count);
3. each object is isolated — everything outside its component (dilated by 2 px for the
   antialiased edge) is painted with the background — and read by the single-object
   analyzer (color, shape, position).

A prompt naming (color₁ shape₁, color₂ shape₂) is *bound* when the two objects read back as
exactly those two nouns, in either place; a swap (red square + blue circle for "a red
circle and a blue square") is a failure. Colour fidelity: the background's median must lie
within `BACKGROUND_TOLERANCE` of the named colour in every channel, and its flatness is the
RMS deviation of the background pixels (away from the objects) from their median.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from diffusion_studio.core import shapes
from diffusion_studio.core.shape_pairs import ShapePair, pair_caption, random_pair
from diffusion_studio.errors import UsageError
from diffusion_studio.eval.analyzer import _check, _dilate, analyze_batch, largest_component

FOREGROUND_DISTANCE = 40.0  # RGB units from the background colour
MIN_OBJECT_FRACTION = 0.01  # a blob smaller than 1% of the image is not an object
BACKGROUND_TOLERANCE = 16.0  # issue 15: background median within 16 RGB units per channel
BINDING_BAR = 0.85
BACKGROUND_BAR = 0.95


@dataclass(frozen=True)
class ObjectReading:
    color: str | None
    shape: str | None
    position: str | None
    area_fraction: float


@dataclass(frozen=True)
class PairAnalysis:
    background: str
    background_rgb: tuple[float, float, float]
    background_noise: float  # RMS deviation of the background pixels from their median
    objects: tuple[ObjectReading, ...]  # up to two, largest first

    def nouns(self) -> list[tuple[str, str]]:
        return [(o.color, o.shape) for o in self.objects if o.color and o.shape]


def _ring_background(x: np.ndarray) -> np.ndarray:
    n, h, w, _ = x.shape
    b = max(1, min(h, w) // 32)
    ring = np.ones((h, w), bool)
    ring[b:h - b, b:w - b] = False
    return np.median(x[:, ring], axis=1)  # [N, 3]


def analyze_pairs(images: np.ndarray, max_objects: int = 2) -> list[PairAnalysis]:
    """Analyze uint8 images [N, H, W, 3] that should hold two shapes on a plain background."""
    images = _check(images)
    n, h, w, _ = images.shape
    x = images.astype(np.float32)
    bg = _ring_background(x)
    names = list(shapes.BACKGROUNDS)
    ref = np.asarray(list(shapes.BACKGROUNDS.values()), np.float32)
    bg_idx = np.linalg.norm(bg[:, None] - ref[None], axis=-1).argmin(axis=1)
    remaining = np.linalg.norm(x - bg[:, None, None, :], axis=-1) > FOREGROUND_DISTANCE
    objects: list[list[ObjectReading]] = [[] for _ in range(n)]
    covered = np.zeros((n, h, w), bool)
    for _ in range(max_objects):
        keep, _share = largest_component(remaining)
        remaining &= ~keep
        zone = _dilate(keep, 2)
        covered |= zone
        isolated = np.where(zone[..., None], x, bg[:, None, None, :])
        readings = analyze_batch(np.clip(np.rint(isolated), 0, 255).astype(np.uint8))
        for i, (k, a) in enumerate(zip(keep, readings)):
            frac = float(k.sum()) / (h * w)
            if frac >= MIN_OBJECT_FRACTION and a.valid:
                objects[i].append(ObjectReading(a.color, a.shape, a.position, frac))
    out = []
    for i in range(n):
        flat = ~_dilate(covered[i:i + 1], 1)[0]
        pixels = x[i][flat] if flat.any() else x[i].reshape(-1, 3)
        noise = float(np.sqrt(np.mean((pixels - np.median(pixels, axis=0)) ** 2)))
        out.append(PairAnalysis(
            background=names[bg_idx[i]],
            background_rgb=tuple(float(v) for v in bg[i]),  # type: ignore[arg-type]
            background_noise=noise,
            objects=tuple(objects[i]),
        ))
    return out


def pair_correctness(pair: ShapePair, analysis: PairAnalysis) -> dict[str, bool]:
    """both: each named noun appears; bound: the two objects are exactly the named nouns;
    swapped: the colors were exchanged between the shapes; background: read as named."""
    want = [(pair.first.color, pair.first.shape), (pair.second.color, pair.second.shape)]
    got = analysis.nouns()
    swap = [(pair.second.color, pair.first.shape), (pair.first.color, pair.second.shape)]
    return {
        "both": all(noun in got for noun in want),
        "bound": Counter(got) == Counter(want),
        "swapped": Counter(got) == Counter(swap),
        "colors": Counter(c for c, _ in got) == Counter(c for c, _ in want),
        "shapes": Counter(s for _, s in got) == Counter(s for _, s in want),
        "background": analysis.background == pair.background,
    }


def background_error(analysis: PairAnalysis, named: str | None = None) -> float:
    """Max over channels of |background median − the named colour| (the read colour when None)."""
    ref = np.asarray(shapes.BACKGROUNDS[named or analysis.background], np.float64)
    return float(np.abs(np.asarray(analysis.background_rgb) - ref).max())


def background_fidelity(analyses: Sequence[PairAnalysis], named: Sequence[str | None]) -> dict:
    """Share of images whose background lies within BACKGROUND_TOLERANCE of the colour the
    prompt named (or, unnamed, the nearest one), and the median / 95th percentile of that
    error and of the background noise (RMS)."""
    errors = np.asarray([background_error(a, bg) for a, bg in zip(analyses, named)], np.float64)
    noise = np.asarray([a.background_noise for a in analyses], np.float64)
    if errors.size == 0:
        return {"n": 0, "within_tolerance": None, "pass": False}
    share = float(np.mean(errors <= BACKGROUND_TOLERANCE))
    return {
        "n": int(errors.size), "tolerance": BACKGROUND_TOLERANCE,
        "within_tolerance": share, "bar": BACKGROUND_BAR, "pass": share >= BACKGROUND_BAR,
        "error_median": float(np.median(errors)), "error_p95": float(np.percentile(errors, 95)),
        "noise_rms_median": float(np.median(noise)), "noise_rms_p95": float(np.percentile(noise, 95)),
    }


def score_pairs(prompts: Sequence[PairPrompt], analyses: Sequence[PairAnalysis]) -> dict:
    """Binding accuracy (the bar: BINDING_BAR), its parts, swaps and background fidelity."""
    if len(prompts) != len(analyses):
        raise ValueError(f"{len(prompts)} prompts but {len(analyses)} analyses.")
    rows = [pair_correctness(p.pair, a) for p, a in zip(prompts, analyses)]
    n = len(rows)
    rate = {k: (sum(r[k] for r in rows) / n if n else None) for k in
            ("both", "bound", "swapped", "colors", "shapes", "background")}
    counts = Counter(len(a.objects) for a in analyses)
    return {
        "n": n, **{f"{k}_rate": v for k, v in rate.items()},
        "objects_found": {str(k): v for k, v in sorted(counts.items())},
        "bar": BINDING_BAR, "pass": rate["bound"] is not None and rate["bound"] >= BINDING_BAR,
        "background_fidelity": background_fidelity(analyses, [p.named_background for p in prompts]),
    }


@dataclass(frozen=True)
class PairPrompt:
    """A two-object evaluation prompt: a held-out noun pair, its caption, the named background."""

    index: int
    prompt: str
    pair: ShapePair
    named_background: str | None
    seed: int


def draw_pair_prompts(n: int, seed: int = 0) -> list[PairPrompt]:
    """n two-object prompts over the held-out noun pairs (never shown together in training),
    in every phrasing of `core.shape_pairs`; image i is sampled with seed `seed + i`."""
    if not 1 <= n <= 100_000:
        raise UsageError(f"The number of two-object prompts must be between 1 and 100000, got {n}.")
    rng = np.random.default_rng([seed, 0x2B1D])
    out = []
    for i in range(n):
        pair = random_pair(rng, held_out=True)
        text = pair_caption(pair, rng)
        named = pair.background if f"{pair.background} background" in text else None
        out.append(PairPrompt(i, text, pair, named, seed + i))
    return out
