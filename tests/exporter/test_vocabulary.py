"""The vocabulary an export declares: Shapes grammar words, folder caption words, none otherwise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from diffusion_studio.core.bundle import MAX_VOCABULARY
from diffusion_studio.core.shape_pairs import pair_caption, random_pair
from diffusion_studio.core.shapes import caption, random_spec
from diffusion_studio.core.vocabulary import words
from exporter.bundle_writer import relative_path
from exporter.inspect import _vocabulary_line
from exporter.vocabulary import caption_vocabulary, folder_vocabulary, run_vocabulary, shapes_vocabulary

SHAPES_WORDS = ["red", "orange", "yellow", "green", "blue", "purple", "circle", "square", "triangle",
                "small", "large", "top", "left", "right", "bottom", "center", "white", "black", "gray",
                "a", "an", "the", "in", "at", "on", "with", "background", "corner", "middle"]


def _caption_words(n: int, pairs: bool, seed: int = 0) -> set[str]:
    rng = np.random.default_rng(seed)
    found: set[str] = set()
    for _ in range(n):
        found.update(words(caption(random_spec(rng), rng)))
        if pairs:
            found.update(words(pair_caption(random_pair(rng), rng)))
    return found


def test_shapes_vocabulary_is_exactly_the_words_of_many_captions():
    vocabulary = shapes_vocabulary()
    assert vocabulary == SHAPES_WORDS
    # Every word 3,000 captions use is declared, and every declared word is used.
    assert _caption_words(3_000, pairs=False) == set(vocabulary)


def test_shapes_vocabulary_with_two_object_captions():
    vocabulary = shapes_vocabulary(pairs=True)
    assert vocabulary == [*SHAPES_WORDS, "and", "next", "to", "beside"]
    assert _caption_words(3_000, pairs=True, seed=1) == set(vocabulary)


def test_caption_vocabulary_orders_by_frequency_and_respects_the_bounds():
    assert caption_vocabulary(["A red apple", "a green apple", "red  Apple!"]) == ["apple", "a", "red", "green"]
    assert caption_vocabulary(["", "  ,;"]) is None
    assert caption_vocabulary(["ok " + "x" * 41]) == ["ok"]  # a word too long for model.json is left out
    assert caption_vocabulary([" ".join(f"w{i}" for i in range(MAX_VOCABULARY + 1))]) is None


def test_folder_vocabulary_reads_captions_and_class_folders(tmp_path):
    (tmp_path / "cat_01.png").write_bytes(b"not decoded")
    (tmp_path / "cat_01.txt").write_text("A black cat\non a sofa\n", encoding="utf-8")
    (tmp_path / "red_apple").mkdir()
    for i in range(2):
        (tmp_path / "red_apple" / f"{i}.jpg").write_bytes(b"")
    vocabulary, note = folder_vocabulary(tmp_path)
    assert note is None
    assert vocabulary == ["a", "apple", "red", "black", "cat", "on", "sofa"]  # by count, ties alphabetical


def test_folder_vocabulary_of_a_missing_folder_is_none_with_a_note(tmp_path):
    vocabulary, note = folder_vocabulary(tmp_path / "gone")
    assert vocabulary is None
    assert note == f"no vocabulary declared: the dataset folder could not be read (The dataset folder " \
                   f"{tmp_path / 'gone'} does not exist)"


def test_run_vocabulary_follows_the_run_config(tmp_path):
    assert run_vocabulary({"dataset": "shapes"}) == (SHAPES_WORDS, None)
    assert run_vocabulary({"dataset": "shapes", "two_shape_share": 0.25})[0][-4:] == ["and", "next", "to", "beside"]
    (tmp_path / "dog.png").write_bytes(b"")
    (tmp_path / "dog.txt").write_text("a happy dog", encoding="utf-8")
    assert run_vocabulary({"dataset": f"folder:{tmp_path}"}) == (["a", "dog", "happy"], None)
    vocabulary, note = run_vocabulary({})
    assert vocabulary is None and note == "no vocabulary declared: the run config names no known dataset (None)"


def test_relative_path_to_the_bundle(tmp_path):
    bundle = tmp_path / "bundles" / "mine"
    assert relative_path(tmp_path / "runs" / "a", bundle) == "../../runs/a"
    assert relative_path(bundle / "x.json", bundle) == "x.json"
    assert not Path(relative_path(tmp_path / "runs" / "a" / "checkpoints" / "s.safetensors", bundle)).is_absolute()


@pytest.mark.parametrize("vocabulary,line", [
    (None, "vocabulary not declared (no note on unknown prompt words)"),
    ([], "vocabulary not declared (no note on unknown prompt words)"),
    (["cat"], "vocabulary 1 word: cat"),
    (SHAPES_WORDS, "vocabulary 29 words: red, orange, yellow, green, blue, purple, circle, square, triangle, "
                   "small, large, top, …"),
])
def test_inspect_vocabulary_line(vocabulary, line):
    assert _vocabulary_line(vocabulary) == line


def test_the_shipped_bundle_declares_the_shapes_vocabulary_and_no_absolute_path():
    from diffusion_studio.core.bundle import read_model_json
    from diffusion_studio.inference.bundle_loader import load_bundle
    from diffusion_studio.paths import default_model_dir

    folder = default_model_dir()
    spec = read_model_json(folder)
    pair_words = ("and", "next", "to", "beside")
    assert spec.vocabulary == (*SHAPES_WORDS, *pair_words)  # trained with two-object examples
    assert spec.provenance.run == "../../../runs/shapes-v2d"
    assert spec.provenance.extra["checkpoint"] == "../../../runs/shapes-v2d/checkpoints/step-00006397.safetensors"
    for name in ("model.json", "unet.onnx", "unet.fp16.onnx", "validation.json"):
        assert b"/work/" not in (folder / name).read_bytes(), name
    loaded = load_bundle(folder, device="cpu")
    assert loaded.vocabulary == (*SHAPES_WORDS, *pair_words)
    assert loaded.model_hash == "9dd0357561"
