"""Two-object Shapes examples: captions that match the pixels, held-out pairs kept out of training."""

from __future__ import annotations

from collections import Counter

import numpy as np

from diffusion_studio.core.shape_pairs import CONNECTIVES, HELD_OUT_PAIRS, NOUNS, is_held_out, pair_example, random_pair
from diffusion_studio.core.shapes import BACKGROUNDS, COLORS


def _centre_pixel(image: np.ndarray, spec) -> np.ndarray:
    y, x = int(spec.cy * 32), int(spec.cx * 32)
    if spec.shape == "triangle":
        y = int((spec.cy + spec.extent / 4) * 32)  # lower half: the wide part
    return image[y, x].astype(int)


def test_captions_name_both_objects_in_order_and_match_the_pixels():
    for i in range(60):
        image, text, pair = pair_example(np.random.default_rng([9, i]), 32)
        a, b = pair.first, pair.second
        assert image.shape == (32, 32, 3) and image.dtype == np.uint8
        first = text.index(f"{a.color} {a.shape}")
        second = text.index(f"{b.color} {b.shape}", first + 1)
        assert first < second, text
        for spec in (a, b):
            assert np.abs(_centre_pixel(image, spec) - COLORS[spec.color]).max() <= 14, (text, i)
        assert (a.color, a.shape) != (b.color, b.shape) and a.position != b.position
        assert a.size == b.size == "small" and a.background == b.background
        corner = image[0, 0].astype(int) if a.position != "top left" and b.position != "top left" else image[-1, -1]
        assert np.abs(np.asarray(corner, int) - BACKGROUNDS[a.background]).max() <= 12
        named_bg = [bg for bg in BACKGROUNDS if f"{bg} background" in text]
        assert named_bg in ([], [a.background])


def test_every_phrasing_appears():
    texts = [pair_example(np.random.default_rng([3, i]))[1] for i in range(300)]
    for word in CONNECTIVES:
        assert any(f" {word} a" in t for t in texts), word
    assert any(t.endswith("background") for t in texts)
    assert any("background with" in t for t in texts)
    assert any(", " in t and " a " not in f" {t} " for t in texts)  # the terse list form


def test_held_out_pairs_never_reach_training_and_are_spread_over_the_nouns():
    assert 12 <= len(HELD_OUT_PAIRS) <= 20
    counts = Counter(n for pair in HELD_OUT_PAIRS for n in pair)
    assert set(counts) == set(NOUNS) and max(counts.values()) <= 3  # every noun is still seen in training
    for a, b in HELD_OUT_PAIRS:
        assert a[0] != b[0] and is_held_out(b, a)  # different colors; order does not matter
    rng = np.random.default_rng(0)
    for _ in range(2000):
        pair = random_pair(rng)
        assert not is_held_out((pair.first.color, pair.first.shape), (pair.second.color, pair.second.shape))
    drawn = {tuple(sorted(((p.first.color, p.first.shape), (p.second.color, p.second.shape))))
             for p in (random_pair(rng, held_out=True) for _ in range(500))}
    assert drawn == {tuple(sorted(p)) for p in HELD_OUT_PAIRS}


def test_captions_without_corners_are_drawn_in_reading_order():
    """No corner named: the first-named object sits in the left column, the second in the right;
    corners named: any two corners, so the first object is on the right about half the time."""
    unnamed, named_first_right = 0, 0
    named = 0
    for i in range(400):
        _image, text, pair = pair_example(np.random.default_rng([5, i]))
        if pair.first.position not in text:  # corners not named
            unnamed += 1
            assert pair.first.position.endswith("left") and pair.second.position.endswith("right"), text
            assert pair.first.cx < 0.5 < pair.second.cx
        else:
            named += 1
            assert pair.second.position in text
            named_first_right += pair.first.position.endswith("right")
    assert unnamed > 150 and named > 100
    assert 0.3 < named_first_right / named < 0.7
