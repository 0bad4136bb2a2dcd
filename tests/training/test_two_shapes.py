"""Optional two-shape Shapes examples: off in every preset, captions that match the pixels."""

from __future__ import annotations

import numpy as np
import pytest

from diffusion_studio.core.shapes import COLORS, parse_caption
from diffusion_studio.errors import UsageError
from diffusion_studio.training.config import PRESETS, preset
from diffusion_studio.training.datasets import make_stream
from diffusion_studio.training.datasets.shapes import ShapesStream
from diffusion_studio.training.datasets.two_shapes import MixedShapesStream, two_shape_example


def test_off_in_every_preset_and_then_the_plain_stream():
    for name in PRESETS:
        cfg = preset(name)
        assert cfg.two_shape_share == 0.0 and cfg.hflip is False
    stream = make_stream("shapes", 16, 4, seed=5)
    assert type(stream) is ShapesStream
    mixed = make_stream("shapes", 16, 4, seed=5, two_shape_share=0.5)
    assert isinstance(mixed, MixedShapesStream)
    with pytest.raises(UsageError, match="Shapes dataset only"):
        make_stream("folder:/x", 16, 4, seed=5, two_shape_share=0.5)


def test_two_shape_captions_match_the_pixels():
    for i in range(40):
        image, text, (a, b) = two_shape_example(np.random.default_rng([9, i]), 32)
        assert image.shape == (32, 32, 3) and image.dtype == np.uint8
        first, second = text.split(" and ", 1)
        for spec, part in ((a, first), (b, second)):
            facts = parse_caption(part)
            assert facts["color"] == spec.color and facts["shape"] == spec.shape, text
            assert facts.get("position", spec.position) == spec.position
            # the centre of each shape has (about) its own color, far from the background
            y, x = int(spec.cy * 32), int(spec.cx * 32)
            if spec.shape == "triangle":
                y = int((spec.cy + spec.extent / 4) * 32)  # lower half: the wide part
            assert np.abs(image[y, x].astype(int) - COLORS[spec.color]).max() <= 14, (text, i)
        assert (a.color, a.shape) != (b.color, b.shape) and a.position != b.position
        assert a.size == b.size == "small" and a.background == b.background
        if "background" in text:
            assert text.endswith(f"on a {a.background} background")


def test_share_of_two_shape_examples_and_determinism():
    stream = MixedShapesStream(16, 64, seed=1, two_shape_share=0.3)
    x, captions = stream.batch(0)
    share = np.mean([" and " in c for c in captions])
    assert 0.15 < share < 0.45
    again, captions_again = MixedShapesStream(16, 64, seed=1, two_shape_share=0.3).batch(0)
    assert captions == captions_again and bool((x == again).all())
    plain = ShapesStream(16, 64, seed=1)
    one = [i for i, c in enumerate(captions) if " and " not in c]
    assert [captions[i] for i in one] == [plain.example(i)[1] for i in one]  # the rest is the plain stream
