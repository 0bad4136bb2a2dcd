import io
import json
import os
import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from diffusion_studio.core.png_meta import (
    encode_png,
    format_parameters,
    parse_parameters,
    read_image,
    read_metadata,
    write_png,
)
from diffusion_studio.errors import UsageError

IMAGE = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
META = {
    "prompt": "a red circle", "negative_prompt": "blurry", "steps": 20, "sampler": "dpmpp-2m",
    "guidance": 3.0, "seed": 42, "width": 32, "height": 32, "model_hash": "abcd1234",
    "model": "shapes", "provider": "CPUExecutionProvider",
}
A1111_TEXT = (
    "a red circle\nNegative prompt: blurry\nSteps: 20, Sampler: DPM++ 2M, CFG scale: 3.0, Seed: 42, "
    "Size: 32x32, Model hash: abcd1234, Model: shapes, Provider: CPUExecutionProvider"
)


def chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, payload) of every chunk of a PNG file."""
    out, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        out.append((data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    return out


def text_chunk(data: bytes, key: str) -> tuple[bytes, str]:
    for kind, payload in chunks(data):
        name, _, rest = payload.partition(b"\0")
        if name.decode("latin-1") != key:
            continue
        if kind == b"tEXt":
            return kind, rest.decode("latin-1")
        if kind == b"iTXt":
            compressed, _method, rest = rest[0], rest[1], rest[2:]
            _lang, _, rest = rest.partition(b"\0")
            _tkey, _, text = rest.partition(b"\0")
            return kind, (zlib.decompress(text) if compressed else text).decode("utf-8")
    raise KeyError(key)


def test_parameters_text_is_the_a1111_format() -> None:
    assert format_parameters(META) == A1111_TEXT
    data = encode_png(IMAGE, META)
    assert text_chunk(data, "parameters") == (b"tEXt", A1111_TEXT)
    kind, js = text_chunk(data, "diffusion_studio")
    assert kind == b"iTXt" and json.loads(js) == META
    with Image.open(io.BytesIO(data)) as im:
        np.testing.assert_array_equal(np.asarray(im), IMAGE)


@pytest.mark.parametrize("prompt", [
    "a 🟥 red square 🎨 on 🌊",
    "עיגול אדום על רקע כחול",  # right-to-left
    "دائرة حمراء, يسار: يمين",
    "x" * 3000 + "🙂" * 4000 + "ש" * 3000,  # 10,000 characters
])
def test_unicode_prompts_round_trip(tmp_path, prompt: str) -> None:
    meta = dict(META, prompt=prompt, negative_prompt="🚫 " + prompt[:50])
    path = write_png(tmp_path / "out.png", IMAGE, meta)
    assert read_metadata(path) == meta
    assert read_metadata(path.read_bytes()) == meta
    kind, text = text_chunk(path.read_bytes(), "parameters")
    assert kind == b"iTXt"  # not Latin-1: UTF-8 iTXt
    parsed = parse_parameters(text)
    assert parsed["prompt"] == prompt and parsed["negative_prompt"] == meta["negative_prompt"]
    assert len(prompt) < 10_000 or len(parsed["prompt"]) == 10_000


def test_pasted_a1111_parameters_parse_leniently() -> None:
    text = (
        "masterpiece, a red circle\non a blue background\n"
        "Negative prompt: blurry, lowres\nwatermark\n"
        "Steps: 30, Sampler: DPM++ 2M Karras, Schedule type: Karras, CFG scale: 7, Seed: 123456789, "
        'Size: 512x768, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Denoising strength: 0.7, '
        'Clip skip: 2, Lora hashes: "detail: 1a2b3c, style: 4d5e6f", Version: v1.9.4'
    )
    assert parse_parameters(text) == {
        "prompt": "masterpiece, a red circle\non a blue background",
        "negative_prompt": "blurry, lowres\nwatermark",
        "steps": 30, "sampler": "DPM++ 2M Karras", "schedule_type": "Karras", "guidance": 7.0,
        "seed": 123456789, "width": 512, "height": 768, "model_hash": "6ce0161689",
        "model": "v1-5-pruned-emaonly", "strength": 0.7, "clip_skip": "2",
        "lora_hashes": "detail: 1a2b3c, style: 4d5e6f", "version": "v1.9.4",
    }
    assert parse_parameters("just a prompt, nothing else") == {"prompt": "just a prompt, nothing else"}
    assert parse_parameters(A1111_TEXT) == META  # our own text parses back to our dict


def _png_with_text(**texts: str) -> bytes:
    info = PngImagePlugin.PngInfo()
    for k, v in texts.items():
        info.add_text(k, v)
    buf = io.BytesIO()
    Image.fromarray(IMAGE).save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def test_read_parameters_only_png_and_json_wins_when_both_exist() -> None:
    only_text = _png_with_text(parameters="a cat\nSteps: 12, Sampler: Euler a, CFG scale: 5.5, Seed: 7, Size: 64x48")
    assert read_metadata(only_text) == {
        "prompt": "a cat", "steps": 12, "sampler": "Euler a", "guidance": 5.5, "seed": 7, "width": 64, "height": 48,
    }
    both = _png_with_text(parameters="a dog\nSteps: 3, Sampler: DDIM, Seed: 1",
                          diffusion_studio=json.dumps({"prompt": "the real one", "steps": 9}))
    assert read_metadata(both) == {"prompt": "the real one", "steps": 9}
    broken_json = _png_with_text(parameters="a dog\nSteps: 3, Sampler: DDIM, Seed: 1", diffusion_studio="{not json")
    assert read_metadata(broken_json) == {"prompt": "a dog", "steps": 3, "sampler": "ddim", "seed": 1}


IMG2IMG = {"strength": 0.6, "init_image": "/photos/a, b: c.png", "init_image_sha256": "0f" * 32}


def test_img2img_strength_and_init_image_round_trip(tmp_path) -> None:
    meta = dict(META, **IMG2IMG)
    path = write_png(tmp_path / "img2img.png", IMAGE, meta)
    assert read_metadata(path) == meta  # the JSON chunk
    _, text = text_chunk(path.read_bytes(), "parameters")
    assert text == A1111_TEXT.replace(", Provider: CPUExecutionProvider", "") + (
        ', Denoising strength: 0.6, Init image: "/photos/a, b: c.png", '
        f"Init image SHA-256: {'0f' * 32}, Provider: CPUExecutionProvider")  # A1111's labels first
    assert parse_parameters(text) == meta  # the A1111 text alone says the same
    assert read_metadata(_png_with_text(parameters=text)) == meta
    # A1111's own img2img line; an init image named by where it came from instead of a path
    a1111 = read_metadata(_png_with_text(parameters="a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 3, "
                                                    "Size: 512x512, Denoising strength: 0.45"))
    assert a1111["strength"] == 0.45 and isinstance(a1111["strength"], float) and "init_image" not in a1111
    pasted = dict(META, strength=1.0, init_image_source="clipboard", init_image_sha256="ab" * 32)
    assert parse_parameters(format_parameters(pasted)) == pasted


def test_text_to_image_metadata_has_no_img2img_fields() -> None:
    text = format_parameters(META)
    assert "Denoising" not in text and "Init image" not in text
    assert set(parse_parameters(text)) == set(META)


def test_read_comfyui_prompt_graph() -> None:
    graph = {
        "3": {"class_type": "KSampler", "inputs": {"seed": 5, "steps": 25, "cfg": 6.5, "sampler_name": "euler",
                                                   "scheduler": "normal", "positive": ["6", 0], "negative": ["7", 0]}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a green triangle"}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "text, watermark"}},
    }
    data = _png_with_text(prompt=json.dumps(graph), workflow="{}")
    assert read_metadata(data) == {"prompt": "a green triangle", "negative_prompt": "text, watermark", "seed": 5,
                                   "steps": 25, "guidance": 6.5, "sampler": "euler", "scheduler": "normal"}


def test_no_metadata_and_bad_files(tmp_path) -> None:
    assert read_metadata(_png_with_text()) == {}
    with pytest.raises(UsageError, match="does not exist"):
        read_metadata(tmp_path / "missing.png")
    with pytest.raises(UsageError, match="PNG"):
        read_metadata(b"definitely not an image")
    jpeg = io.BytesIO()
    Image.fromarray(IMAGE).save(jpeg, format="JPEG")
    with pytest.raises(UsageError, match="not a PNG"):
        read_metadata(jpeg.getvalue())
    with pytest.raises(UsageError, match="PNG"):
        read_metadata(encode_png(IMAGE, META)[:60])  # truncated


def test_write_is_atomic_and_errors_are_one_sentence(tmp_path) -> None:
    target = tmp_path / "a.png"
    target.write_bytes(b"old")
    write_png(target, IMAGE, META)
    assert read_metadata(target) == META
    assert sorted(os.listdir(tmp_path)) == ["a.png"]  # no temp file left behind
    with pytest.raises(UsageError) as e:
        write_png(tmp_path / "no" / "such" / "dir.png", IMAGE, META)
    assert "cannot write" in str(e.value) and "\n" not in str(e.value)
    folder = tmp_path / "folder.png"
    folder.mkdir()
    with pytest.raises(UsageError, match="cannot write"):
        write_png(folder, IMAGE, META)  # the temp file is written, the final rename fails
    assert sorted(os.listdir(tmp_path)) == ["a.png", "folder.png"] and os.listdir(folder) == []
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if not os.access(locked, os.W_OK):  # root ignores permissions
            with pytest.raises(UsageError, match="cannot write"):
                write_png(locked / "x.png", IMAGE, META)
            assert os.listdir(locked) == []
    finally:
        locked.chmod(0o700)
    with pytest.raises(UsageError, match="JSON"):
        encode_png(IMAGE, {"prompt": "x", "bad": object()})
    with pytest.raises(UsageError, match="uint8"):
        encode_png(IMAGE.astype(np.float32), META)
    with pytest.raises(UsageError, match="shape"):
        encode_png(np.zeros((2, 2, 2), np.uint8), META)


def test_read_image_decodes_and_applies_exif_rotation(tmp_path) -> None:
    path = tmp_path / "photo.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    Image.new("RGB", (40, 20), (200, 10, 10)).save(path, format="JPEG", exif=exif)
    image = read_image(path, "The photo")
    assert image.size == (20, 40)
    assert np.asarray(image)[10, 10, 0] > 150


def test_read_image_errors_are_one_sentence(tmp_path) -> None:
    (tmp_path / "notes.png").write_text("not an image")
    cases = {
        tmp_path / "missing.png": f"The image {tmp_path / 'missing.png'} does not exist.",
        tmp_path: f"The image {tmp_path} is not a file.",
        tmp_path / "notes.png": f"The image {tmp_path / 'notes.png'} cannot be read (not a readable image file).",
        tmp_path / ("n" * 300 + ".png"): "cannot be read (File name too long).",
    }
    for path, message in cases.items():
        with pytest.raises(UsageError) as e:
            read_image(path)
        assert message in str(e.value) and "\n" not in str(e.value)


def _save(path, size: tuple[int, int], metadata=None) -> None:
    path.write_bytes(encode_png(np.zeros((size[1], size[0], 3), np.uint8), metadata))


def test_decompression_bombs_are_one_sentence_and_large_images_read_quietly(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000)  # Pillow warns above 1,000 pixels, refuses above 2,000
    large, bomb = tmp_path / "large.png", tmp_path / "bomb.png"
    _save(large, (40, 40), META)  # 1,600 pixels: Pillow's warning level
    _save(bomb, (50, 50), META)  # 2,500 pixels: Pillow's error level
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert read_image(large).size == (40, 40)
        assert read_metadata(large) == META  # e.g. a PNG dropped on the window
    assert [w.message for w in caught] == []
    with pytest.raises(UsageError) as e:
        read_image(bomb, "The init image")
    assert str(e.value) == f"The init image {bomb} is too large to read (more than 2,000 pixels)."
    with pytest.raises(UsageError) as e:
        read_metadata(bomb)
    assert str(e.value) == f"{str(bomb)!r} is too large to read (more than 2,000 pixels)."
