"""core.vocabulary: the words of a prompt, the ones a model does not know, the note, example prompts."""

from __future__ import annotations

import subprocess
import sys

import pytest

from diffusion_studio.core import shape_pairs, shapes
from diffusion_studio.core import vocabulary as vocab
from diffusion_studio.core.vocabulary import STOP_WORDS, example_prompts, prompt_note, unknown_words, words

SHAPES = ["red", "orange", "yellow", "green", "blue", "purple", "circle", "square", "triangle",
          "small", "large", "top", "left", "right", "bottom", "center", "white", "black", "gray",
          "a", "an", "the", "in", "at", "on", "with", "background", "corner", "middle"]


def test_stop_words_are_the_function_words():
    assert {"a", "an", "the", "on", "in", "at", "with", "and", "of", "to"} <= STOP_WORDS
    assert not {"red", "circle", "background", "star", "pink"} & STOP_WORDS
    assert all(w == w.lower() and words(w) == [w] for w in STOP_WORDS)


@pytest.mark.parametrize("prompt,expected", [
    ("a red circle", ["a", "red", "circle"]),
    ("A Red-Circle, TOP-left!", ["a", "red", "circle", "top", "left"]),
    ("don't  stop\tnow", ["don't", "stop", "now"]),
    ("Café 2 x_y", ["café", "2", "x", "y"]),
    ("", []),
    ("  ,.;!  ", []),
])
def test_words(prompt, expected):
    assert words(prompt) == expected


def test_unknown_words_in_order_and_once():
    assert unknown_words("a pink star on a blue background", SHAPES) == ["pink", "star"]
    assert unknown_words("Pink star, PINK star and a pink moon", SHAPES) == ["pink", "star", "moon"]
    assert unknown_words("a large red circle in the top left on a white background", SHAPES) == []
    assert unknown_words("a red circle of the sun", ["red", "circle"]) == ["sun"]  # "of", "the": stop words
    assert unknown_words("Red CIRCLE", ["Red", "circle"]) == []  # compared in lowercase
    assert unknown_words("anything at all", None) == []
    assert unknown_words("a cat", []) == ["cat"]


def test_prompt_note_sentences():
    assert prompt_note("a pink star on a blue background", SHAPES) == "This model does not know: pink, star."
    assert prompt_note("a red circle", SHAPES) is None
    assert prompt_note("a pink star", None) is None  # no vocabulary declared: nothing to say
    for empty in ("", "   ", " , "):
        assert prompt_note(empty, SHAPES) == "An empty prompt makes an unconditional image (no guidance)."
        assert prompt_note(empty, None) == "An empty prompt makes an unconditional image (no guidance)."
    many = " ".join(f"w{i}" for i in range(10))
    assert prompt_note(many, SHAPES) == "This model does not know: w0, w1, w2, w3, w4, w5, w6, w7, …."
    assert prompt_note("a red circle", SHAPES, conditioning="none") == \
        "This model ignores the prompt (it is not text-conditioned)."
    assert prompt_note("", SHAPES, conditioning="none") is None


def test_shapes_example_prompts():
    prompts = example_prompts(SHAPES)
    assert prompts == [
        "a red circle on a white background",
        "a small orange square in the top right on a black background",
        "a yellow triangle in the bottom left on a gray background",
        "a small green circle on a white background",
        "a blue square in the center on a black background",
    ]
    for prompt in prompts:
        assert unknown_words(prompt, SHAPES) == []
        facts = shapes.parse_caption(prompt)
        assert facts["color"] in shapes.COLORS and facts["shape"] in shapes.SHAPES
    assert example_prompts(SHAPES, 2) == prompts[:2]
    assert example_prompts(SHAPES, 0) == []
    assert example_prompts(SHAPES) == prompts  # deterministic


def test_shapes_example_prompts_with_two_object_words():
    pairs = [*SHAPES, "and", "next", "to", "beside"]
    prompts = example_prompts(pairs, 5)
    assert prompts[4] == "a blue square next to a red triangle on a black background"
    assert all(unknown_words(p, pairs) == [] for p in prompts)


def test_example_prompts_use_only_the_words_a_small_vocabulary_has():
    small = ["a", "red", "blue", "circle"]
    prompts = example_prompts(small, 3)
    assert prompts == ["a red circle", "a blue circle"]  # repeats dropped
    assert all(unknown_words(p, small) == [] for p in prompts)


def test_example_prompts_of_another_vocabulary_join_a_few_words():
    assert example_prompts(["the", "cat", "dog", "sofa", "of", "sun", "sky", "tree", "grass"], 5) == \
        ["cat dog sofa", "sun sky tree", "grass"]
    assert example_prompts(["the", "a"]) == []
    assert example_prompts(["Cat", "cat", "dog"], 1) == ["cat dog"]


def test_the_shapes_grammar_mirrors_core_shapes():
    assert vocab._SHAPES_COLORS == tuple(shapes.COLORS)
    assert vocab._SHAPES_SHAPES == shapes.SHAPES
    assert vocab._SHAPES_BACKGROUNDS == tuple(shapes.BACKGROUNDS)
    assert vocab._SHAPES_POSITIONS == shapes.POSITIONS
    assert set(shape_pairs.CORNERS) <= set(vocab._SHAPES_POSITIONS)


def test_no_numpy_import():
    code = "import sys, diffusion_studio.core.vocabulary; print('numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
