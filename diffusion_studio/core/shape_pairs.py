"""Two-object Shapes examples (numpy only): two small shapes in two corners, one caption naming both.

Attribute binding — every colour word must land on its own shape, "a red circle and a blue
square" must not come out as a blue circle and a red square — is the classic failure of
text-to-image models. These examples teach it; `diffusion-studio eval --two-objects` measures it.

A fixed set of noun pairs (`HELD_OUT_PAIRS`, about one in nine) never appears together in
training, so the evaluation prompts name combinations the model has not seen side by side.

Layout: a caption that names each object's corner is drawn in those corners (any two);
one that does not is drawn in reading order — the first-named object in the left column,
the second in the right, each at a random height. Without that convention nothing in
the prompt tells a pixel which of the two nouns it belongs to, so a small network has to
break the symmetry between the corners itself, and mostly mixes the two (a red square
and a red circle); with it, binding is a function of the prompt and the pixel's column.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from diffusion_studio.core.shapes import BACKGROUNDS, COLORS, SHAPES, ShapeSpec, coverage, random_spec, render

CORNERS: tuple[str, ...] = ("top left", "top right", "bottom left", "bottom right")
NOUNS: tuple[tuple[str, str], ...] = tuple((c, s) for c in COLORS for s in SHAPES)  # (color, shape)
CONNECTIVES: tuple[str, ...] = ("and", "next to", "with", "beside")
P_CORNERS = 0.4  # share of captions that name each object's corner
P_BACKGROUND = 0.6  # share of captions that name the background
P_SIZE = 0.2  # share of captions that call both objects "small"
P_LIST = 0.15  # share of terse "red circle, blue square, black background" captions


def _pair_key(a: tuple[str, str], b: tuple[str, str]) -> int:
    """A number that mixes both noun indices (order-free), so every noun is held out with 1–3 partners."""
    i, j = sorted((NOUNS.index(a), NOUNS.index(b)))
    return 31 * i + 17 * j


def is_held_out(a: tuple[str, str], b: tuple[str, str]) -> bool:
    """True for the unordered noun pairs kept out of training (same in both orders)."""
    return a[0] != b[0] and _pair_key(a, b) % 9 == 4


HELD_OUT_PAIRS: tuple[tuple[tuple[str, str], tuple[str, str]], ...] = tuple(
    (a, b) for i, a in enumerate(NOUNS) for b in NOUNS[i + 1:] if is_held_out(a, b))


@dataclass(frozen=True)
class ShapePair:
    """Two shapes on one background; `first` is the one the caption names first."""

    first: ShapeSpec
    second: ShapeSpec

    @property
    def background(self) -> str:
        return self.first.background


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def pair_caption(pair: ShapePair, rng: np.random.Generator, corners: bool | None = None) -> str:
    """One English caption naming both objects in order, e.g. 'a red circle next to a blue square'.

    `corners`: name each object's corner (None: with probability P_CORNERS).
    """
    a, b = pair.first, pair.second
    if corners is None:
        corners = bool(rng.random() < P_CORNERS)
    size = "small " if rng.random() < P_SIZE else ""
    background = rng.random() < P_BACKGROUND
    if rng.random() < P_LIST:  # "red circle top left, blue square bottom right, black background"
        items = [f"{size}{s.color} {s.shape}" + (f" {s.position}" if corners else "") for s in (a, b)]
        return ", ".join(items + ([f"{pair.background} background"] if background else []))
    phrases = []
    for s in (a, b):
        noun = f"{size}{s.color} {s.shape}"
        phrases.append(f"{_article(noun)} {noun}" + (f" in the {s.position}" if corners else ""))
    connective = str(rng.choice(CONNECTIVES))
    text = f"{phrases[0]} {connective} {phrases[1]}"
    if not background:
        return text
    bg = pair.background
    if connective != "with" and rng.random() < 0.5:
        return f"{_article(bg)} {bg} background with {text}"
    return f"{text} on {_article(bg)} {bg} background"


def random_pair(rng: np.random.Generator, *, held_out: bool = False, reading_order: bool = False) -> ShapePair:
    """Two small shapes in two different corners of one background, differing in color or shape.

    `held_out=False` draws only pairs that training may show; `held_out=True` only the
    held-out pairs (for evaluation prompts). `reading_order`: the first shape in the left
    column and the second in the right (for captions that do not name the corners).
    """
    if reading_order:
        corner_a = f"{rng.choice(('top', 'bottom'))} left"
        corner_b = f"{rng.choice(('top', 'bottom'))} right"
    else:
        corner_a, corner_b = (str(c) for c in rng.choice(CORNERS, size=2, replace=False))
    background = str(rng.choice(list(BACKGROUNDS)))
    if held_out:
        a_noun, b_noun = HELD_OUT_PAIRS[int(rng.integers(len(HELD_OUT_PAIRS)))]
        if rng.random() < 0.5:
            a_noun, b_noun = b_noun, a_noun
    else:
        a_noun = NOUNS[int(rng.integers(len(NOUNS)))]
        others = [n for n in NOUNS if n != a_noun and not is_held_out(a_noun, n)]
        b_noun = others[int(rng.integers(len(others)))]
    a = random_spec(rng, size="small", position=corner_a, background=background,
                    color=a_noun[0], shape=a_noun[1])
    b = random_spec(rng, size="small", position=corner_b, background=background,
                    color=b_noun[0], shape=b_noun[1])
    return ShapePair(a, b)


def render_pair(pair: ShapePair, image_size: int = 32) -> np.ndarray:
    """Both shapes on the first one's background: uint8 [H, W, 3] (the corners keep them apart)."""
    cover = coverage(pair.second, image_size)[..., None]
    base = render(pair.first, image_size).astype(np.float32)
    img = cover * np.asarray(pair.second.color_rgb, np.float32) + (1 - cover) * base
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def pair_example(rng: np.random.Generator, image_size: int = 32) -> tuple[np.ndarray, str, ShapePair]:
    """(uint8 [H, W, 3] image, caption, pair) of a training example (never a held-out pair).

    Captions that do not name the corners get the reading-order layout (module docstring).
    """
    corners = bool(rng.random() < P_CORNERS)
    pair = random_pair(rng, reading_order=not corners)
    return render_pair(pair, image_size), pair_caption(pair, rng, corners=corners), pair

