"""Generation parameters inside PNG files.

Two text chunks are written:

- `parameters`: the AUTOMATIC1111 text that users paste around (also read by ComfyUI
  extensions and image boards), the settings on one line (wrapped here)::

      <prompt>
      Negative prompt: <negative prompt>
      Steps: 20, Sampler: DPM++ 2M, CFG scale: 3.0, Seed: 42, Size: 32x32, Model hash: abcd1234,
      Model: shapes, Provider: CPUExecutionProvider

- `diffusion_studio`: a UTF-8 iTXt chunk holding the exact settings as JSON.

An img2img image adds `strength` (A1111's "Denoising strength: 0.6") and names its init
image, which a PNG cannot hold: `init_image` (its file's path) or `init_image_source`
(e.g. "clipboard"), and `init_image_sha256` ("Init image SHA-256: …" in the text).
An image of a class-conditional model records `class_label` ("Class: 3") and, when the
model names its classes, `class_name` ("Class name: cat").

`read_metadata` returns the JSON dict when it exists, else parses `parameters` (or, as a
last resort, a ComfyUI `prompt` graph). Metadata dicts use our names: prompt,
negative_prompt, steps, sampler, guidance, seed, width, height, model, model_hash, …

`read_image` decodes any image file (an img2img start, a forward-process source) with one
sentence for every way it can fail, Pillow's decompression-bomb guard included.
"""

from __future__ import annotations

import io
import json
import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from diffusion_studio.core.files import atomic_write_bytes
from diffusion_studio.core.params import A1111_SAMPLER_NAMES, parse_sampler
from diffusion_studio.errors import UsageError

__all__ = [
    "PARAMETERS_KEY",
    "JSON_KEY",
    "format_parameters",
    "parse_parameters",
    "encode_png",
    "write_png",
    "read_metadata",
    "read_image",
]

PARAMETERS_KEY = "parameters"
JSON_KEY = "diffusion_studio"

# Our key -> the A1111 label, in the order A1111 writes them. Size is written from width/height.
_LABELS: dict[str, str] = {
    "steps": "Steps",
    "sampler": "Sampler",
    "guidance": "CFG scale",
    "seed": "Seed",
    "model_hash": "Model hash",
    "model": "Model",
    "strength": "Denoising strength",
    "init_image": "Init image",
    "init_image_source": "Init image source",
    "init_image_sha256": "Init image SHA-256",
    "eta": "Eta",
    "class_label": "Class",
    "class_name": "Class name",
}
_KEYS_BY_LABEL = {label.lower(): key for key, label in _LABELS.items()}
_INT_KEYS = {"steps", "seed", "width", "height", "batch_size", "batch_index", "T", "class_label"}
_FLOAT_KEYS = {"guidance", "strength", "eta"}
_NOT_IN_LINE = {"prompt", "negative_prompt", "width", "height"}

# One "Key: value" pair of the settings line; the value is a JSON string or runs to the next comma.
_PAIR = re.compile(r'\s*([^\s:,"][^:,"]*?):\s*("(?:\\.|[^\\"])*"|[^,]*)(?:,|$)')
_NEGATIVE = "Negative prompt:"


def _label(key: str) -> str:
    return _LABELS.get(key) or key.replace("_", " ").capitalize()


def _quote(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    if any(ch in text for ch in ',:"\n\r') or text != text.strip():
        return json.dumps(text, ensure_ascii=False)
    return text


def format_parameters(metadata: Mapping[str, Any]) -> str:
    """The A1111 `parameters` text for a metadata dict (see module docstring)."""
    pairs: list[tuple[str, Any]] = []
    ordered = [k for k in _LABELS if k in metadata] + [k for k in metadata if k not in _LABELS]
    for key in ordered:
        if key in _NOT_IN_LINE or metadata[key] is None:
            continue
        value = metadata[key]
        if key == "sampler":
            try:
                value = A1111_SAMPLER_NAMES[parse_sampler(value)]
            except UsageError:
                pass
        pairs.append((_label(key), value))
        if key == "seed" and "width" in metadata and "height" in metadata:
            pairs.append(("Size", f"{metadata['width']}x{metadata['height']}"))
    if "seed" not in metadata and "width" in metadata and "height" in metadata:
        pairs.append(("Size", f"{metadata['width']}x{metadata['height']}"))
    lines = [str(metadata.get("prompt", ""))]
    if metadata.get("negative_prompt"):
        lines.append(f"{_NEGATIVE} {metadata['negative_prompt']}")
    lines.append(", ".join(f"{label}: {_quote(value)}" for label, value in pairs))
    return "\n".join(lines)


def _convert(key: str, raw: str) -> Any:
    try:
        if key in _INT_KEYS:
            return int(raw)
        if key in _FLOAT_KEYS:
            return float(raw)
    except ValueError:
        return raw
    if key == "sampler":
        try:
            return parse_sampler(raw).value
        except UsageError:
            return raw
    return raw


def _parse_settings_line(line: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label, raw in _PAIR.findall(line):
        raw = raw.strip()
        if raw.startswith('"'):
            try:
                raw = json.loads(raw)
            except json.JSONDecodeError:
                pass
        label = label.strip()
        if label.lower() == "size":
            m = re.fullmatch(r"\s*(\d+)\s*x\s*(\d+)\s*", raw)
            if m:
                out["width"], out["height"] = int(m.group(1)), int(m.group(2))
                continue
        key = _KEYS_BY_LABEL.get(label.lower()) or label.lower().replace(" ", "_")
        out[key] = _convert(key, raw)
    return out


def parse_parameters(text: str) -> dict[str, Any]:
    """Parse an A1111/ComfyUI-style `parameters` text leniently; unknown settings are kept.

    Known labels become our keys (Steps -> steps, CFG scale -> guidance, Size -> width and
    height, …); other labels become lower_snake_case keys with string values.
    """
    lines = text.replace("\r\n", "\n").split("\n")
    settings: dict[str, Any] = {}
    # The last line holds the settings when it looks like "Key: value, Key: value, ...".
    last = lines[-1]
    if len(_PAIR.findall(last)) >= 3 or last.lstrip().startswith("Steps:"):
        settings = _parse_settings_line(last)
        lines = lines[:-1] or [""]
    negative_at = next((i for i, ln in enumerate(lines) if ln.startswith(_NEGATIVE)), None)
    result: dict[str, Any] = {}
    if negative_at is None:
        result["prompt"] = "\n".join(lines)
    else:
        result["prompt"] = "\n".join(lines[:negative_at])
        negative = [lines[negative_at][len(_NEGATIVE):].lstrip(" ")] + lines[negative_at + 1 :]
        result["negative_prompt"] = "\n".join(negative)
    result.update(settings)
    return result


def _parse_comfyui_prompt(text: str) -> dict[str, Any]:
    """Best effort: seed, steps, cfg, sampler and prompts of the first KSampler in a ComfyUI graph."""
    try:
        graph = json.loads(text)
    except json.JSONDecodeError:
        return {}
    if not isinstance(graph, dict):
        return {}
    nodes = {k: v for k, v in graph.items() if isinstance(v, dict)}

    def text_of(ref: Any) -> str | None:
        if isinstance(ref, list) and ref and str(ref[0]) in nodes:
            value = nodes[str(ref[0])].get("inputs", {}).get("text")
            return value if isinstance(value, str) else None
        return None

    for node in nodes.values():
        inputs = node.get("inputs")
        if not str(node.get("class_type", "")).startswith("KSampler") or not isinstance(inputs, dict):
            continue
        out: dict[str, Any] = {"prompt": text_of(inputs.get("positive")) or ""}
        negative = text_of(inputs.get("negative"))
        if negative:
            out["negative_prompt"] = negative
        for ours, theirs in (("seed", "seed"), ("seed", "noise_seed"), ("steps", "steps"),
                             ("guidance", "cfg"), ("sampler", "sampler_name"), ("scheduler", "scheduler")):
            if theirs in inputs and not isinstance(inputs[theirs], list):
                out[ours] = inputs[theirs]
        return out
    return {}


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise UsageError(f"PNG images must be uint8, got {image.dtype}.")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4))):
        raise UsageError(f"PNG images must have shape [H, W], [H, W, 1], [H, W, 3] or [H, W, 4], got {image.shape}.")
    return np.ascontiguousarray(image)


def encode_png(image_uint8: np.ndarray, metadata: Mapping[str, Any] | None = None) -> bytes:
    """PNG bytes for a uint8 [H, W, C] image with `parameters` and JSON metadata chunks."""
    image = _check_image(image_uint8)
    info = PngImagePlugin.PngInfo()
    if metadata:
        if not all(isinstance(k, str) for k in metadata):
            raise UsageError("PNG metadata keys must be strings.")
        try:
            as_json = json.dumps(dict(metadata), ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise UsageError(f"PNG metadata must be JSON-serialisable: {e}.") from None
        # add_text picks tEXt when the text is Latin-1, iTXt (UTF-8) otherwise, as A1111 does.
        info.add_text(PARAMETERS_KEY, format_parameters(metadata))
        info.add_itxt(JSON_KEY, as_json, zip=len(as_json) > 4096)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def write_png(
    path: str | os.PathLike[str], image_uint8: np.ndarray, metadata: Mapping[str, Any] | None = None
) -> Path:
    """Write a PNG with metadata atomically (temp file in the same folder, then os.replace)."""
    return atomic_write_bytes(path, encode_png(image_uint8, metadata))


def _text_chunks(path_or_bytes: str | os.PathLike[str] | bytes) -> dict[str, str]:
    source: Any
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        source, name = io.BytesIO(bytes(path_or_bytes)), "the given bytes"
    else:
        source, name = path_or_bytes, repr(str(path_or_bytes))
    try:
        with warnings.catch_warnings():  # only the text is kept: a large image is no concern here
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source) as im:
                if im.format != "PNG":
                    raise UsageError(f"{name} is not a PNG image.")
                im.load()  # text chunks after the image data are read here
                return {str(k): str(v) for k, v in getattr(im, "text", {}).items()}
    except UsageError:
        raise
    except FileNotFoundError:
        raise UsageError(f"{name} does not exist.") from None
    except Image.DecompressionBombError:
        raise UsageError(f"{name} is too large to read ({_bomb_limit()}).") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise UsageError(f"{name} is not a readable PNG image ({e}).") from None


def read_metadata(path_or_bytes: str | os.PathLike[str] | bytes) -> dict[str, Any]:
    """Generation parameters of a PNG: our JSON chunk if present (it wins), else the parsed
    `parameters` text, else a ComfyUI `prompt` graph; {} when the PNG has none."""
    chunks = _text_chunks(path_or_bytes)
    if JSON_KEY in chunks:
        try:
            data = json.loads(chunks[JSON_KEY])
            if isinstance(data, dict):
                return data
        except json.JSONDecodeError:
            pass
    if PARAMETERS_KEY in chunks:
        return parse_parameters(chunks[PARAMETERS_KEY])
    if "prompt" in chunks:
        return _parse_comfyui_prompt(chunks["prompt"])
    return {}


def _bomb_limit() -> str:
    limit = Image.MAX_IMAGE_PIXELS
    return "more pixels than Pillow's safety limit" if limit is None else f"more than {2 * limit:,} pixels"


def read_image(path: str | os.PathLike[str], what: str = "The image") -> Image.Image:
    """Decode an image file (PNG, JPEG, …) with its EXIF rotation applied; UsageError with one
    sentence, starting with `what` and the path, if it cannot be read.

    Pillow's decompression-bomb guard stays on: more than 2 × `Image.MAX_IMAGE_PIXELS` pixels
    (≈179 megapixels) is refused. Between one and two times that limit (a large camera photo)
    the image is read without Pillow's warning: every caller scales it down to the model's size.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.load()
                return ImageOps.exif_transpose(image)
    except FileNotFoundError:
        raise UsageError(f"{what} {path} does not exist.") from None
    except IsADirectoryError:
        raise UsageError(f"{what} {path} is not a file.") from None
    except Image.DecompressionBombError:
        raise UsageError(f"{what} {path} is too large to read ({_bomb_limit()}).") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        strerror = exc.strerror if isinstance(exc, OSError) else None
        raise UsageError(f"{what} {path} cannot be read ({strerror or 'not a readable image file'}).") from None
