"""model.json's `latent` block and CLIP conditioning fields (issue 16): parse, round trip, one sentence each."""

from __future__ import annotations

import copy
import json
import re

import pytest

from diffusion_studio.core.bundle import LatentSpec, parse_model_json
from diffusion_studio.errors import BundleError

MATRIX = [[0.1, 0.2, 0.3, 0.4], [0.0, -0.1, 0.2, 0.0], [1.0, 0.0, 0.0, -1.0]]
LATENT = {
    "format": "diffusion-studio-bundle", "format_version": 2, "name": "sd",
    "image": {"size": 512, "channels": 3},
    "diffusion": {"T": 1000, "schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
                  "prediction": "epsilon", "variance": "fixed_small", "clip_sample": False,
                  "clip_sample_range": 1.0, "steps_offset": 1},
    "sampler_defaults": {"sampler": "dpmpp-2m", "steps": 20, "guidance": 7.5},
    "unet": {"file": "unet.onnx", "fp16_file": None, "opset": 18, "parameters": 10, "flops_per_forward": 100},
    "conditioning": {"kind": "text", "text_encoder": "text_encoder.onnx", "max_tokens": 77, "embedding_dim": 768,
                     "text_encoder_sha256": None, "tokenizer_sha256": None, "text_encoder_kind": "clip",
                     "tokenizer": "tokenizer.json", "pad_token_id": 49407},
    "provenance": {"run": None, "step": None, "weights": "diffusers", "metrics": {}, "exporter": "x"},
    "latent": {"channels": 4, "factor": 8, "scaling_factor": 0.18215, "vae_decoder": "vae_decoder.onnx",
               "vae_encoder": "vae_encoder.onnx", "preview": {"matrix": MATRIX, "bias": [0.1, 0.2, 0.3]}},
    "files": {},
}


def _with(path: str, value) -> dict:
    data = copy.deepcopy(LATENT)
    *parents, key = path.split(".")
    node = data
    for p in parents:
        node = node[p]
    if value is KeyError:
        del node[key]
    else:
        node[key] = value
    return data


def test_latent_block_parses_and_round_trips() -> None:
    spec = parse_model_json(LATENT)
    assert spec.latent == LatentSpec(channels=4, factor=8, scaling_factor=0.18215, vae_decoder="vae_decoder.onnx",
                                     vae_encoder="vae_encoder.onnx", preview_matrix=tuple(map(tuple, MATRIX)),
                                     preview_bias=(0.1, 0.2, 0.3))
    co = spec.conditioning
    assert (co.text_encoder_kind, co.tokenizer, co.pad_token_id) == ("clip", "tokenizer.json", 49407)
    assert spec.diffusion.steps_offset == 1
    assert spec.to_dict() == LATENT
    assert parse_model_json(json.loads(json.dumps(spec.to_dict()))) == spec


def test_pixel_bundles_have_no_latent_and_keep_their_documents() -> None:
    data = _with("latent", KeyError)
    data["diffusion"].pop("steps_offset")
    for key in ("text_encoder_kind", "tokenizer", "pad_token_id"):
        data["conditioning"].pop(key)
    spec = parse_model_json(data)
    assert spec.latent is None and spec.diffusion.steps_offset == 0 and spec.conditioning.text_encoder_kind is None
    assert spec.to_dict() == data  # no new keys written for pixel bundles
    no_encoder = _with("latent.vae_encoder", None)
    no_encoder["latent"]["preview"] = None
    la = parse_model_json(no_encoder).latent
    assert la is not None and la.vae_encoder is None and la.preview_matrix is None


@pytest.mark.parametrize("path, value, message", [
    ("latent.channels", 0, "field 'latent.channels' must be an integer from 1 to 16, got 0"),
    ("latent.factor", 3, "field 'latent.factor' must be one of 1, 2, 4, 8, 16, 32 (the VAE's downsampling), got 3"),
    ("image.size", 100, "field 'image.size' must be a multiple of latent.factor (8) in a latent bundle, got 100"),
    ("latent.scaling_factor", 0, "field 'latent.scaling_factor' must be a positive number, got 0"),
    ("latent.vae_decoder", "../x.onnx", "field 'latent.vae_decoder' must be a file name inside the bundle folder"),
    ("latent.vae_decoder", KeyError, "field 'latent.vae_decoder' is missing"),
    ("latent.preview", {"matrix": MATRIX[:2], "bias": [0, 0, 0]},
     "field 'latent.preview.matrix' must be 3 rows of 4 numbers"),
    ("latent.preview", {"matrix": MATRIX, "bias": [0, 0]}, "field 'latent.preview.bias' must be 3 numbers"),
    ("latent.preview", {"matrix": [[0, 0, 0, "x"], [0] * 4, [0] * 4], "bias": [0, 0, 0]},
     "field 'latent.preview.matrix[0]' must hold finite numbers"),
    ("latent", [], "field 'latent' must be a JSON object, got []"),
    ("conditioning.text_encoder_kind", "t5", "field 'conditioning.text_encoder_kind' must be one of 'clip', got 't5'"),
    ("conditioning.tokenizer", KeyError, "field 'conditioning.tokenizer' is missing"),
    ("conditioning.pad_token_id", -1, "field 'conditioning.pad_token_id' must be a non-negative integer, got -1"),
    ("conditioning.text_encoder", "shared", "field 'conditioning.text_encoder' must be a file inside the bundle"),
    ("diffusion.steps_offset", 1000, "field 'diffusion.steps_offset' must be an integer from 0 to diffusion.T"),
])
def test_bad_fields_one_sentence(path: str, value, message: str) -> None:
    with pytest.raises(BundleError, match=re.escape(message)) as info:
        parse_model_json(_with(path, value))
    text = str(info.value)
    assert text.startswith("model.json: field ") and text.endswith(".") and "\n" not in text


def test_format_1_refuses_the_new_fields() -> None:
    data = _with("format_version", 1)
    with pytest.raises(BundleError, match="needs format_version 2"):
        parse_model_json(data)
    data = _with("conditioning.text_encoder_kind", None)
    data["conditioning"].pop("text_encoder_kind")
    with pytest.raises(BundleError, match=re.escape("'conditioning.tokenizer' needs conditioning.text_encoder_kind")):
        parse_model_json(data)
