"""`diffusion-studio generate`: PNGs with metadata that reads back; bad input -> exit 2, one line, no files."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from diffusion_studio.cli import main
from diffusion_studio.cli.generate import TEMP_SUFFIX_RESERVE
from diffusion_studio.core import png_meta
from diffusion_studio.core.params import GUIDANCE_MAX
from diffusion_studio.inference.bundle_loader import load_bundle
from diffusion_studio.inference.pipeline import GenerationRequest, Pipeline

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def out_dir(tmp_path) -> Path:
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["generate", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _assert_one_error_line(err: str, fragment: str) -> None:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and fragment in lines[0]
    assert "Traceback" not in err


def test_generate_writes_png_whose_metadata_reads_back(capsys, tiny_bundle, out_dir):
    out = out_dir / "img.png"
    code, stdout, stderr = _run(capsys, "a red circle", "--model", str(tiny_bundle), "--sampler", "dpmpp-2m",
                                "--steps", "3", "--guidance", "1.5", "--seed", "7", "--negative", "blue",
                                "--device", "cpu", "-o", str(out))
    assert code == 0, stderr
    assert sorted(p.name for p in out_dir.iterdir()) == ["img.png"]
    meta = png_meta.read_metadata(out)
    digest = hashlib.sha256((tiny_bundle / "unet.onnx").read_bytes()).hexdigest()
    assert isinstance(meta.pop("seconds"), float)
    assert meta == {
        "prompt": "a red circle", "negative_prompt": "blue", "seed": 7, "steps": 3, "sampler": "dpmpp-2m",
        "guidance": 1.5, "model": "tiny", "model_hash": digest[:10], "provider": "CPUExecutionProvider",
        "onnxruntime": ort.__version__, "width": 8, "height": 8, "batch_size": 1, "batch_index": 0,
        "clip_x0": True,
    }
    with Image.open(out) as image:
        parameters = image.text["parameters"]
        pixels = np.asarray(image.convert("RGB"))
    assert parameters.startswith("a red circle\nNegative prompt: blue\n")
    assert "Steps: 3, Sampler: DPM++ 2M, CFG scale: 1.5, Seed: 7, Size: 8x8" in parameters
    expected = Pipeline(load_bundle(tiny_bundle, "cpu")).generate(GenerationRequest(
        "a red circle", negative_prompt="blue", sampler="dpmpp-2m", steps=3, guidance=1.5, seed=7))
    np.testing.assert_array_equal(pixels, expected.images[0])
    assert f"wrote {out}" in stdout
    assert "provider: CPUExecutionProvider (onnxruntime" in stdout
    assert "steps/s" in stdout and "time: " in stdout
    assert stderr == ""


def test_batch_writes_numbered_files_with_consecutive_seeds(capsys, tiny_bundle, out_dir):
    code, _, err = _run(capsys, "a star", "--model", str(tiny_bundle), "--batch", "3", "--seed", "10",
                        "--device", "cpu", "-o", str(out_dir / "b.png"))
    assert code == 0, err
    names = sorted(p.name for p in out_dir.iterdir())
    assert names == ["b-0.png", "b-1.png", "b-2.png"]
    seeds = [png_meta.read_metadata(out_dir / n)["seed"] for n in names]
    assert seeds == [10, 11, 12]
    # image 1 of the batch is seed 11 alone
    code, _, _ = _run(capsys, "a star", "--model", str(tiny_bundle), "--seed", "11", "--device", "cpu",
                      "-o", str(out_dir / "alone.png"))
    assert code == 0
    a, b = (np.asarray(Image.open(out_dir / n)).astype(int) for n in ("b-1.png", "alone.png"))
    assert np.abs(a - b).max() <= 1


def test_grid_writes_one_tiled_image(capsys, tiny_bundle, out_dir):
    code, _, err = _run(capsys, "a star", "--model", str(tiny_bundle), "--batch", "4", "--grid", "--seed", "3",
                        "--device", "cpu", "-o", str(out_dir / "grid.png"))
    assert code == 0, err
    assert [p.name for p in out_dir.iterdir()] == ["grid.png"]
    with Image.open(out_dir / "grid.png") as image:
        assert image.size == (16, 16)
        tiles = np.asarray(image.convert("RGB"))
    meta = png_meta.read_metadata(out_dir / "grid.png")
    assert meta["seed"] == 3 and meta["batch_size"] == 4 and "seeds 3..6" in meta["grid"]
    assert not np.array_equal(tiles[:8, :8], tiles[:8, 8:])


def test_cuda_request_warns_once_and_runs_on_cpu(capsys, tiny_bundle, out_dir):
    from diffusion_studio.inference.providers import cuda_unusable_reason

    if cuda_unusable_reason() is None:
        pytest.skip("a usable CUDA provider is present")
    code, out, err = _run(capsys, "x", "--model", str(tiny_bundle), "--device", "cuda", "-o", str(out_dir / "c.png"))
    assert code == 0
    assert err.splitlines() == [f"warning: CUDA was requested but the model runs on the CPU: {cuda_unusable_reason()}."]
    assert "cuda requested but fell back" in out
    assert png_meta.read_metadata(out_dir / "c.png")["provider"] == "CPUExecutionProvider"


def test_long_emoji_and_right_to_left_prompts_work(capsys, tiny_bundle, out_dir):
    long_prompt = "a big red circle in the top left corner " * 250  # 10,000 characters
    code, _, err = _run(capsys, long_prompt, "--model", str(tiny_bundle), "--device", "cpu", "-o",
                        str(out_dir / "long.png"))
    assert code == 0
    assert len(err.splitlines()) == 1 and err.startswith("note: ") and "longer than 8 tokens" in err
    assert png_meta.read_metadata(out_dir / "long.png")["prompt"] == long_prompt
    for name, prompt in (("emoji", "🔴🟦 a circle 🎨"), ("rtl", "دائرة حمراء"), ("hebrew", "עיגול אדום")):
        code, _, err = _run(capsys, prompt, "--model", str(tiny_bundle), "--device", "cpu",
                            "-o", str(out_dir / f"{name}.png"))
        assert code == 0 and all(line.startswith("note: ") for line in err.splitlines())  # L = 8 tokens
        assert png_meta.read_metadata(out_dir / f"{name}.png")["prompt"] == prompt


def _edit(folder: Path, edit) -> None:
    data = json.loads((folder / "model.json").read_text())
    edit(data)
    (folder / "model.json").write_text(json.dumps(data))


def _corrupt_onnx(folder: Path) -> None:
    raw = b"not an onnx model at all" * 10
    (folder / "unet.onnx").write_bytes(raw)
    _edit(folder, lambda d: d["files"]["unet.onnx"].update(sha256=hashlib.sha256(raw).hexdigest(), bytes=len(raw)))


BAD_BUNDLES = {
    "missing field": (lambda f: _edit(f, lambda d: d["unet"].pop("file")), "field 'unet.file' is missing"),
    "wrong field": (lambda f: _edit(f, lambda d: d["diffusion"].update(T=-3)), "field 'diffusion.T' must be"),
    "corrupt onnx": (_corrupt_onnx, "is not a valid ONNX model"),
    "truncated onnx": (lambda f: (f / "unet.onnx").write_bytes((f / "unet.onnx").read_bytes()[:100]),
                       "is truncated or was replaced"),
    "graph disagrees": (lambda f: _edit(f, lambda d: d["conditioning"].update(max_tokens=12)),
                        "context has shape [N, 8, 384], but model.json needs [N, 12, 384]"),
}


@pytest.mark.parametrize("case", list(BAD_BUNDLES))
def test_bad_bundle_exit_2_one_line_nothing_written(capsys, bundle_copy, out_dir, case):
    breaker, fragment = BAD_BUNDLES[case]
    folder = bundle_copy()
    breaker(folder)
    code, out, err = _run(capsys, "x", "--model", str(folder), "--device", "cpu", "-o", str(out_dir / "o.png"))
    assert code == 2
    _assert_one_error_line(err, fragment)
    assert list(out_dir.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--steps", "0"], "Steps must be an integer between 1 and 50"),
        (["--steps", "51"], "Steps must be an integer between 1 and 50 (the model's T), got 51."),
        (["--steps", "-4"], "Steps must be an integer between 1 and 50"),
        (["--guidance", "-1"], f"Guidance must be a number between 0 and {GUIDANCE_MAX:g}, got -1.0."),
        (["--guidance", "nan"], "Guidance must be a number between 0 and"),
        (["--guidance", "inf"], f"Guidance must be a number between 0 and {GUIDANCE_MAX:g}, got inf."),
        (["--guidance", "1e308"], f"Guidance must be a number between 0 and {GUIDANCE_MAX:g}, got 1e+308."),
        (["--batch", "0"], "Batch must be an integer between 1 and 64, got 0."),
        (["--batch", "-2"], "Batch must be an integer between 1 and 64"),
        (["--seed", "-1"], "The seed must be an integer between 0 and"),
        (["--sampler", "euler"], "argument --sampler: invalid choice: 'euler'"),
        (["--steps", "ten"], "argument --steps: invalid int value: 'ten'"),
        (["--device", "tpu"], "argument --device: invalid choice: 'tpu'"),
    ],
)
def test_bad_settings_exit_2_one_line_nothing_written(capsys, tiny_bundle, out_dir, args, fragment):
    code, out, err = _run(capsys, "x", "--model", str(tiny_bundle), *args, "-o", str(out_dir / "o.png"))
    assert code == 2
    _assert_one_error_line(err, fragment)
    assert list(out_dir.iterdir()) == []


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


@pytest.mark.parametrize(
    ("flags", "fields", "recorded"),
    [
        (["--sampler", "ddim", "--eta", "1"], {"sampler": "ddim", "eta": 1.0}, {"eta": 1.0}),
        (["--sampler", "ddpm", "--ddpm-variance", "beta-tilde"], {"sampler": "ddpm", "ddpm_variance": "beta-tilde"},
         {"ddpm_variance": "beta-tilde"}),
        (["--sampler", "dpmpp-2m", "--no-clip"], {"sampler": "dpmpp-2m", "clip_x0": False}, {"clip_x0": False}),
    ],
)
def test_sampler_options_reach_the_sampler_and_the_metadata(capsys, tiny_bundle, out_dir, flags, fields, recorded):
    out = out_dir / "o.png"
    code, _, err = _run(capsys, "a red circle", "--model", str(tiny_bundle), "--steps", "6", "--seed", "21",
                        "--device", "cpu", *flags, "-o", str(out))
    assert code == 0, err
    meta = png_meta.read_metadata(out)
    assert {k: meta[k] for k in recorded} == recorded
    pipeline = Pipeline(load_bundle(tiny_bundle, "cpu"))
    same = pipeline.generate(GenerationRequest("a red circle", steps=6, seed=21, **fields))
    default = pipeline.generate(GenerationRequest("a red circle", steps=6, seed=21, sampler=fields["sampler"]))
    np.testing.assert_array_equal(_pixels(out), same.images[0])
    assert np.abs(same.images.astype(int) - default.images.astype(int)).max() > 2  # the option changed the image
    assert same.metadata[0]["clip_x0"] is meta["clip_x0"]


def _write_banded(path: Path, fmt: str) -> None:
    """24x16 image: 4 blue columns, 16 red, 4 blue: its center square is pure red."""
    pixels = np.zeros((16, 24, 3), np.uint8)
    pixels[:, :, 2] = 255
    pixels[:, 4:20] = (255, 0, 0)
    Image.fromarray(pixels).save(path, format=fmt, **({"quality": 100} if fmt == "JPEG" else {}))


def test_init_image_is_center_cropped_resized_and_scaled(tmp_path):
    from diffusion_studio.cli.generate import init_image_array, open_init_image

    _write_banded(tmp_path / "band.png", "PNG")
    x = init_image_array(open_init_image(tmp_path / "band.png"), 8, 3)
    assert x.dtype == np.float32 and x.shape == (1, 3, 8, 8)
    np.testing.assert_array_equal(x[0, 0], np.ones((8, 8)))  # red channel: 255 -> +1
    np.testing.assert_array_equal(x[0, 1:], -np.ones((2, 8, 8)))  # no blue from the cropped-off bands
    rng = np.random.default_rng(0)  # at the model's size: no resampling, exact u / 127.5 - 1
    exact = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(exact).convert("RGBA").save(tmp_path / "exact.png")
    x = init_image_array(open_init_image(tmp_path / "exact.png"), 8, 3)
    np.testing.assert_allclose(x[0], exact.transpose(2, 0, 1) / 127.5 - 1.0, atol=1e-6)
    gray = init_image_array(open_init_image(tmp_path / "exact.png"), 8, 1)
    assert gray.shape == (1, 1, 8, 8)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_img2img_from_a_file(capsys, tiny_bundle, out_dir, tmp_path, fmt):
    from diffusion_studio.cli.generate import init_image_array, open_init_image

    init = tmp_path / f"init.{fmt.lower()}"
    _write_banded(init, fmt)
    out = out_dir / "i.png"
    code, stdout, err = _run(capsys, "a red circle", "--model", str(tiny_bundle), "--sampler", "ddim", "--steps",
                             "10", "--seed", "4", "--init-image", str(init), "--strength", "0.3", "--device", "cpu",
                             "-o", str(out))
    assert code == 0, err
    meta = png_meta.read_metadata(out)
    assert meta["strength"] == 0.3 and meta["init_image"] == str(init)
    assert "img2img strength 0.3" in stdout
    pixels = _pixels(out).astype(int)
    assert pixels[:, :, 0].mean() > pixels[:, :, 2].mean() + 50  # stays red: it started from red
    expected = Pipeline(load_bundle(tiny_bundle, "cpu")).generate(GenerationRequest(
        "a red circle", sampler="ddim", steps=10, seed=4, strength=0.3,
        init_image=init_image_array(open_init_image(init), 8, 3)))
    np.testing.assert_array_equal(pixels, expected.images[0])


def test_init_image_default_strength_is_0_75(capsys, tiny_bundle, out_dir, tmp_path):
    _write_banded(tmp_path / "init.png", "PNG")
    code, _, err = _run(capsys, "x", "--model", str(tiny_bundle), "--init-image", str(tmp_path / "init.png"),
                        "--device", "cpu", "-o", str(out_dir / "d.png"))
    assert code == 0, err
    assert png_meta.read_metadata(out_dir / "d.png")["strength"] == 0.75


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--eta", "-0.5"], "Eta must be a number between 0 and 1 (DDIM's η), got -0.5."),
        (["--eta", "2"], "Eta must be a number between 0 and 1"),
        (["--eta", "nan"], "Eta must be a number between 0 and 1"),
        (["--eta", "much"], "argument --eta: invalid float value: 'much'"),
        (["--ddpm-variance", "large"], "argument --ddpm-variance: invalid choice: 'large'"),
        (["--strength", "0.5"], "--strength needs --init-image"),
        (["--init-image", "{init}", "--strength", "0"], "Strength must lie in (0, 1], got 0.0."),
        (["--init-image", "{init}", "--strength", "1.5"], "Strength must lie in (0, 1]"),
        (["--init-image", "{init}", "--strength", "nan"], "Strength must lie in (0, 1]"),
        (["--init-image", "{tmp}/nowhere.png"], "The init image {tmp}/nowhere.png does not exist."),
        (["--init-image", "{tmp}"], "is not a file"),
        (["--init-image", "{tmp}/notes.png"], "cannot be read (not a readable image file)"),
        (["--init-image", "{tmp}/" + "i" * 300 + ".png"], "cannot be read (File name too long)."),
    ],
)
def test_bad_sampler_and_img2img_options_exit_2(capsys, tiny_bundle, out_dir, tmp_path, args, fragment):
    _write_banded(tmp_path / "init.png", "PNG")
    (tmp_path / "notes.png").write_text("not an image")
    fill = {"{init}": str(tmp_path / "init.png"), "{tmp}": str(tmp_path)}
    for key, value in fill.items():
        args = [a.replace(key, value) for a in args]
        fragment = fragment.replace(key, value)
    code, _, err = _run(capsys, "x", "--model", str(tiny_bundle), *args, "-o", str(out_dir / "o.png"))
    assert code == 2
    _assert_one_error_line(err, fragment)
    assert list(out_dir.iterdir()) == []


def test_missing_bundle_exit_2(capsys, tmp_path, out_dir):
    code, _, err = _run(capsys, "x", "--model", str(tmp_path / "missing"), "-o", str(out_dir / "o.png"))
    assert code == 2
    _assert_one_error_line(err, f"The model bundle {tmp_path / 'missing'} does not exist.")
    assert list(out_dir.iterdir()) == []


def test_missing_default_model_exit_2_names_the_fix(capsys, tmp_path, out_dir, monkeypatch):
    import diffusion_studio.paths

    default = tmp_path / "not-installed" / "shapes"
    monkeypatch.setattr(diffusion_studio.paths, "default_model_dir", lambda: default)
    code, _, err = _run(capsys, "x", "-o", str(out_dir / "o.png"))
    assert code == 2
    assert err == (f"error: The default model is not installed at {default}; "
                   "pass --model BUNDLE (or reinstall Diffusion Studio).\n")
    assert list(out_dir.iterdir()) == []


def test_unwritable_outputs_are_refused_before_generating(capsys, tiny_bundle, out_dir, monkeypatch):
    # Generating would fail loudly if reached: the output check must come first.
    import diffusion_studio.inference.pipeline as pipeline_module

    monkeypatch.setattr(pipeline_module.Pipeline, "generate", lambda *a, **k: pytest.fail("generated anyway"))
    (out_dir / "a_file").write_text("x")
    (out_dir / "a_dir.png").mkdir()
    cases = [
        (out_dir / "missing" / "o.png", "The output folder"),
        (out_dir / "a_file" / "o.png", "is not a folder"),
        (out_dir / "a_dir.png", "is a folder; give a file name ending in .png"),
        (out_dir / "o.jpg", "The output file must end in .png"),
    ]
    if os.geteuid() != 0:  # root may write into a read-only folder
        locked = out_dir / "locked"
        locked.mkdir(mode=0o500)
        cases.append((locked / "o.png", "Cannot write to the output folder"))
    before = sorted(p.name for p in out_dir.iterdir())
    for path, fragment in cases:
        code, _, err = _run(capsys, "x", "--model", str(tiny_bundle), "-o", str(path))
        assert code == 2, path
        _assert_one_error_line(err, fragment)
    assert sorted(p.name for p in out_dir.iterdir()) == before
    assert list((out_dir / "a_dir.png").iterdir()) == []


def test_python_m_diffusion_studio_generate_subprocess(tiny_bundle, out_dir):
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = out_dir / "sub.png"
    ok = subprocess.run(
        [sys.executable, "-m", "diffusion_studio", "generate", "a red circle", "--model", str(tiny_bundle),
         "--seed", "1", "--steps", "2", "-o", str(out)],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    assert png_meta.read_metadata(out)["seed"] == 1
    assert "steps/s" in ok.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "diffusion_studio", "generate", "x", "--model", str(tiny_bundle), "--steps", "0",
         "-o", str(out_dir / "bad.png")],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert bad.returncode == 2
    assert bad.stderr.splitlines() == ["error: Steps must be an integer between 1 and 50 (the model's T), got 0."]
    assert not (out_dir / "bad.png").exists()


def test_help_states_the_guidance_bound_of_core(capsys):
    for command in ("generate", "eval"):
        assert main([command, "--help"]) == 0
        assert f"0..{GUIDANCE_MAX:g}" in capsys.readouterr().out


def test_too_long_output_names_exit_2_one_line_nothing_written(capsys, tiny_bundle, out_dir):
    limit = os.pathconf(out_dir, "PC_NAME_MAX") - TEMP_SUFFIX_RESERVE  # 239 on ext4 and tmpfs
    fits = "c" * (limit - 5) + ".png"  # one byte short of the limit alone, but c…-2.png of a batch is over it
    cases = [
        (["-o", str(out_dir / ("a" * 300 + ".png"))],  # ENAMETOOLONG on every common file system
         f"error: The output file name {'a' * 20}… is 304 bytes long; use at most {limit}."),
        (["-o", str(out_dir / ("b" * 300) / "o.png")], f"error: Cannot use the output path {out_dir / ('b' * 300)}"
                                                         "/o.png (a name in it is too long)."),
        (["--batch", "3", "-o", str(out_dir / fits)],
         f"error: The output file name {'c' * 20}… is {limit + 1} bytes long; use at most {limit}."),
    ]
    for args, line in cases:
        code, out, err = _run(capsys, "x", "--model", str(tiny_bundle), "--device", "cpu", *args)
        assert code == 2, err
        assert err.splitlines() == [line]
        assert out == "" and list(out_dir.iterdir()) == []
    out = out_dir / fits  # alone it fits and is written
    code, _, err = _run(capsys, "x", "--model", str(tiny_bundle), "--steps", "1", "--device", "cpu", "-o", str(out))
    assert code == 0, err
    assert [p.name for p in out_dir.iterdir()] == [fits]


def test_large_init_image_is_read_quietly_and_a_decompression_bomb_is_one_sentence(
        capsys, tiny_bundle, out_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000)  # Pillow warns above 1,000 pixels, refuses above 2,000
    Image.new("RGB", (40, 40), (255, 0, 0)).save(tmp_path / "large.png")  # 1,600 pixels
    Image.new("RGB", (50, 50), (255, 0, 0)).save(tmp_path / "bomb.png")  # 2,500 pixels
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, _, err = _run(capsys, "x", "--model", str(tiny_bundle), "--steps", "2", "--device", "cpu",
                            "--init-image", str(tmp_path / "large.png"), "-o", str(out_dir / "large.png"))
    assert code == 0, err
    assert err == "" and [w.message for w in caught if issubclass(w.category, Image.DecompressionBombWarning)] == []
    assert (out_dir / "large.png").is_file()
    code, out, err = _run(capsys, "x", "--model", str(tiny_bundle), "--device", "cpu",
                          "--init-image", str(tmp_path / "bomb.png"), "-o", str(out_dir / "bomb.png"))
    assert code == 2
    assert err == f"error: The init image {tmp_path / 'bomb.png'} is too large to read (more than 2,000 pixels).\n"
    assert out == "" and not (out_dir / "bomb.png").exists()


def test_prompt_that_is_not_utf8_is_replaced_with_a_note_subprocess(tiny_bundle, out_dir):
    # The shell's $(printf 'a\377 circle'): bytes, not text. Python's argv gets U+DCFF for the 0xFF byte.
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "PYTHONIOENCODING": "utf-8"}
    out = out_dir / "u.png"
    done = subprocess.run(
        [sys.executable.encode(), b"-m", b"diffusion_studio", b"generate", b"a\xff circle", b"--negative", b"\xfe\xfd",
         b"--model", os.fsencode(tiny_bundle), b"--seed", b"3", b"--steps", b"2", b"--device", b"cpu",
         b"-o", os.fsencode(out)],
        capture_output=True, env=env, timeout=120,
    )
    stderr = done.stderr.decode("utf-8")
    assert done.returncode == 0, stderr
    assert stderr.splitlines() == [
        "note: the prompt is not valid UTF-8; 1 undecodable byte became U+FFFD (\ufffd).",
        "note: the negative prompt is not valid UTF-8; 2 undecodable bytes became U+FFFD (\ufffd).",
    ]
    meta = png_meta.read_metadata(out)
    assert meta["prompt"] == "a\ufffd circle" and meta["negative_prompt"] == "\ufffd\ufffd"
    expected = Pipeline(load_bundle(tiny_bundle, "cpu")).generate(GenerationRequest(
        "a\ufffd circle", negative_prompt="\ufffd\ufffd", steps=2, seed=3))
    np.testing.assert_array_equal(_pixels(out), expected.images[0])


# --- the vocabulary note (the GUI's prompt hint, on stderr) ----------------------------------------


@pytest.fixture
def vocabulary_bundle(bundle_copy) -> Path:
    """The tiny bundle declaring a small vocabulary."""
    folder = bundle_copy("tiny-vocab")
    data = json.loads((folder / "model.json").read_text(encoding="utf-8"))
    data["vocabulary"] = ["red", "blue", "circle", "square", "background"]
    (folder / "model.json").write_text(json.dumps(data), encoding="utf-8")
    assert load_bundle(folder, device="cpu").vocabulary == ("red", "blue", "circle", "square", "background")
    return folder


@pytest.mark.parametrize("prompt,note", [
    ("a pink star on blue", "note: This model does not know: pink, star."),  # within the 8 tokens
    ("", "note: An empty prompt makes an unconditional image (no guidance)."),
    ("a red circle on blue", None),
])
def test_generate_notes_unknown_words_and_the_empty_prompt(capsys, vocabulary_bundle, out_dir, prompt, note):
    out = out_dir / "img.png"
    code, stdout, stderr = _run(capsys, prompt, "--model", str(vocabulary_bundle), "--steps", "2", "--seed", "1",
                                "--device", "cpu", "-o", str(out))
    assert code == 0, stderr
    assert out.is_file() and png_meta.read_metadata(out)["prompt"] == prompt
    notes = [line for line in stderr.splitlines() if line.startswith("note: ")]
    assert notes == ([note] if note else [])


def test_generate_without_a_vocabulary_notes_only_the_empty_prompt(capsys, tiny_bundle, out_dir):
    assert load_bundle(tiny_bundle, device="cpu").vocabulary is None
    code, _, stderr = _run(capsys, "a pink star", "--model", str(tiny_bundle), "--steps", "2", "--seed", "1",
                           "--device", "cpu", "-o", str(out_dir / "a.png"))
    assert code == 0 and "note:" not in stderr
    code, _, stderr = _run(capsys, "", "--model", str(tiny_bundle), "--steps", "2", "--seed", "1",
                           "--device", "cpu", "-o", str(out_dir / "b.png"))
    assert code == 0
    assert stderr.splitlines() == ["note: An empty prompt makes an unconditional image (no guidance)."]
