"""`diffusion-studio generate --model OPTIMUM_FOLDER` (issue 16): an image of the requested size, the same
prompt and seed give the same PNG, another prompt another one; bad folders and sizes: one sentence, exit 2."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffusion_studio.cli import main
from diffusion_studio.core import png_meta
from diffusion_studio.inference.latent import LatentPipeline, load_latent
from diffusion_studio.inference.pipeline import GenerationRequest

pytest.importorskip("diffusers")
sys.path.insert(0, str(Path(__file__).parents[1]))
sys.path.insert(0, str(Path(__file__).parents[1] / "inference"))
from latent_models import build_tiny_sd_pipeline  # noqa: E402
from latent_optimum import write_optimum_folder  # noqa: E402


@pytest.fixture(scope="module")
def optimum(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("latent-cli")
    return write_optimum_folder(build_tiny_sd_pipeline(tmp), tmp / "optimum")


def _run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main(["generate", *(str(a) for a in argv)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _one_error(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0][len("error: "):]


def test_generates_the_requested_size_reproducibly(capsys, optimum, tmp_path):
    args = ("--model", optimum, "--steps", 4, "--seed", 9, "--device", "cpu", "--width", 24, "--height", 16)
    code, stdout, _ = _run(capsys, "a red cat", *args, "-o", tmp_path / "a.png")
    assert code == 0 and "seed 9, ddim, 4 steps, guidance 7.5" in stdout
    a = np.asarray(Image.open(tmp_path / "a.png"))
    assert a.shape == (16, 24, 3)
    assert _run(capsys, "a red cat", *args, "-o", tmp_path / "b.png")[0] == 0
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "b.png")), a)
    assert _run(capsys, "a blue house", *args, "-o", tmp_path / "c.png")[0] == 0
    assert not np.array_equal(np.asarray(Image.open(tmp_path / "c.png")), a)
    expected = LatentPipeline(load_latent(optimum, "cpu")).generate(
        GenerationRequest(prompt="a red cat", steps=4, seed=9, width=24, height=16)).images[0]
    np.testing.assert_array_equal(a, expected)
    meta = png_meta.read_metadata(tmp_path / "a.png")
    assert (meta["width"], meta["height"], meta["prompt"]) == (24, 16, "a red cat")


def test_default_size_and_img2img(capsys, optimum, tmp_path):
    code, _, _ = _run(capsys, "a dog", "--model", optimum, "--steps", 2, "--seed", 1, "-o", tmp_path / "d.png")
    assert code == 0 and Image.open(tmp_path / "d.png").size == (16, 16)
    Image.fromarray(np.full((40, 30, 3), 200, np.uint8)).save(tmp_path / "init.png")
    code, _, _ = _run(capsys, "a dog", "--model", optimum, "--steps", 10, "--seed", 1, "--init-image",
                      tmp_path / "init.png", "--strength", 0.5, "--width", 12, "--height", 16, "-o", tmp_path / "i.png")
    assert code == 0 and Image.open(tmp_path / "i.png").size == (12, 16)
    assert png_meta.read_metadata(tmp_path / "i.png")["strength"] == 0.5


def test_bad_sizes_and_folders_say_one_sentence(capsys, optimum, tmp_path):
    code, _, err = _run(capsys, "a cat", "--model", optimum, "--width", 15, "-o", tmp_path / "x.png")
    assert code == 2 and "multiple of 2" in _one_error(err)
    code, _, err = _run(capsys, "--width", 48, "-o", tmp_path / "x.png")  # the bundled pixel model
    assert code == 2 and "images only, so the width must be" in _one_error(err)
    broken = tmp_path / "broken"
    shutil.copytree(optimum, broken)
    (broken / "unet" / "model.onnx").unlink()
    code, _, err = _run(capsys, "a cat", "--model", broken, "-o", tmp_path / "x.png")
    assert code == 2 and _one_error(err).endswith("lacks unet/model.onnx.")
    (broken / "model_index.json").write_text("{", encoding="utf-8")
    code, _, err = _run(capsys, "a cat", "--model", broken, "-o", tmp_path / "x.png")
    assert code == 2 and "model_index.json is not valid JSON" in _one_error(err)
    assert not (tmp_path / "x.png").exists()
