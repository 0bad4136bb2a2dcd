"""Two-object Shapes examples in the training stream: off in every preset but v2, deterministic."""

from __future__ import annotations

import numpy as np
import pytest

from diffusion_studio.errors import UsageError
from diffusion_studio.training.datasets import make_stream
from diffusion_studio.training.datasets.shapes import ShapesStream
from diffusion_studio.training.datasets.two_shapes import MixedShapesStream


def test_share_zero_is_the_plain_stream():
    assert type(make_stream("shapes", 16, 4, seed=5)) is ShapesStream
    assert isinstance(make_stream("shapes", 16, 4, seed=5, two_shape_share=0.5), MixedShapesStream)
    with pytest.raises(UsageError, match="Shapes dataset only"):
        make_stream("folder:/x", 16, 4, seed=5, two_shape_share=0.5)


def _is_pair(caption: str) -> bool:
    return sum(caption.count(w) for w in ("circle", "square", "triangle")) == 2


def test_share_of_two_shape_examples_and_determinism():
    stream = MixedShapesStream(16, 64, seed=1, two_shape_share=0.3)
    x, captions = stream.batch(0)
    share = np.mean([_is_pair(c) for c in captions])
    assert 0.15 < share < 0.45
    again, captions_again = MixedShapesStream(16, 64, seed=1, two_shape_share=0.3).batch(0)
    assert captions == captions_again and bool((x == again).all())
    plain = ShapesStream(16, 64, seed=1)
    one = [i for i, c in enumerate(captions) if not _is_pair(c)]
    assert [captions[i] for i in one] == [plain.example(i)[1] for i in one]  # the rest is the plain stream
