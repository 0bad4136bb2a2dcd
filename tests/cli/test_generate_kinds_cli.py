"""`diffusion-studio generate` with imported diffusers bundles: no PROMPT for unconditional and class models,
`--class` by name or index, and one sentence (exit 2) for a class label or a missing prompt where it does not fit."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from diffusion_studio.cli import main
from diffusion_studio.core import png_meta
from diffusion_studio.inference.bundle_loader import load_bundle
from diffusion_studio.inference.pipeline import CLASS_NOTE, UNCONDITIONAL_NOTE, GenerationRequest, Pipeline

pytest.importorskip("diffusers")


def _run(capsys, *argv: object) -> tuple[int, str, str]:
    code = main(["generate", *(str(a) for a in argv)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _one_error(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0][len("error: "):]


def test_unconditional_bundle_needs_no_prompt(capsys, diffusers_models, tmp_path):
    bundle, out = diffusers_models.bundle("rgb"), tmp_path / "u.png"
    code, stdout, stderr = _run(capsys, "--model", bundle, "--steps", 3, "--seed", 5, "--device", "cpu", "-o", out)
    assert code == 0 and stderr == ""
    assert "seed 5, dpmpp-2m, 3 steps, unconditional" in stdout
    image = np.asarray(Image.open(out))
    expected = Pipeline(load_bundle(bundle, device="cpu")).generate(GenerationRequest(steps=3, seed=5)).images[0]
    np.testing.assert_array_equal(image, expected)
    meta = png_meta.read_metadata(out)
    assert (meta["prompt"], meta["guidance"], meta["width"]) == ("", 1.0, 32) and "class_label" not in meta


def test_unconditional_bundle_notes_an_ignored_prompt_once(capsys, diffusers_models, tmp_path):
    code, _, stderr = _run(capsys, "a cat", "--negative", "dog", "--guidance", 5,
                           "--model", diffusers_models.bundle("gray"), "--steps", 2, "--seed", 1,
                           "--device", "cpu", "-o", tmp_path / "g.png")
    assert code == 0 and stderr.splitlines() == [f"note: {UNCONDITIONAL_NOTE}"]
    assert Image.open(tmp_path / "g.png").size == (16, 16)
    assert np.asarray(Image.open(tmp_path / "g.png")).ndim == 2  # one channel: a grey PNG


@pytest.mark.parametrize("label", ["frog", "3", "FROG"])
def test_class_bundle_takes_class_by_name_or_index(capsys, diffusers_models, tmp_path, label):
    out = tmp_path / "c.png"
    code, stdout, stderr = _run(capsys, "--class", label, "--model", diffusers_models.bundle("cls"), "--steps", 2,
                                "--seed", 2, "--device", "cpu", "-o", out)
    assert code == 0 and stderr == ""
    assert "2 steps, class 3 (frog)" in stdout
    meta = png_meta.read_metadata(out)
    assert (meta["class_label"], meta["class_name"]) == (3, "frog")
    assert "Class: 3, Class name: frog" in png_meta._text_chunks(out)["parameters"]


def test_class_bundle_with_a_prompt_notes_it(capsys, diffusers_models, tmp_path):
    code, _, stderr = _run(capsys, "a dog", "--class", "0", "--model", diffusers_models.bundle("cls"), "--steps", 2,
                           "--device", "cpu", "-o", tmp_path / "c.png")
    assert code == 0 and stderr.splitlines() == [f"note: {CLASS_NOTE}"]


@pytest.mark.parametrize(("model", "argv", "message"), [
    ("cls", [], "The model cls is class-conditional: choose a class, 0..3 or a name (cat, dog, ship, frog)."),
    ("cls", ["--class", "7"],
     "The class 7 is out of range for the model cls; choose 0..3 or a name (cat, dog, ship, frog)."),
    ("rgb", ["--class", "1"], "The model rgb is not class-conditional, so it takes no class label."),
])
def test_bad_class_use_is_one_sentence(capsys, diffusers_models, tmp_path, model, argv, message):
    out = tmp_path / "x.png"
    code, stdout, stderr = _run(capsys, *argv, "--model", diffusers_models.bundle(model), "--device", "cpu",
                                "-o", out)
    assert code == 2 and stdout == "" and _one_error(stderr) == message
    assert not out.exists()


def test_class_on_a_text_bundle_is_one_sentence(capsys, tiny_bundle, tmp_path):
    code, _, stderr = _run(capsys, "a red circle", "--class", "dog", "--model", tiny_bundle, "--device", "cpu",
                           "-o", tmp_path / "t.png")
    assert code == 2 and _one_error(stderr) == "The model tiny is not class-conditional, so it takes no class label."
    assert not (tmp_path / "t.png").exists()


def test_text_bundle_without_prompt_is_one_sentence(capsys, tiny_bundle, tmp_path):
    code, _, stderr = _run(capsys, "--model", tiny_bundle, "--device", "cpu", "-o", tmp_path / "t.png")
    assert code == 2
    assert _one_error(stderr) == 'The model tiny is text-conditioned: give a PROMPT ("" for an unconditional image).'
    code, _, stderr = _run(capsys, "", "--model", tiny_bundle, "--steps", 2, "--device", "cpu",
                           "-o", tmp_path / "t.png")
    assert code == 0 and "note: An empty prompt makes an unconditional image (no guidance)." in stderr
