import copy
import hashlib
import json
import os

import pytest

from diffusion_studio.core.bundle import (
    BundleSpec, parse_model_json, read_model_json, sha256_file, write_model_json,
)
from diffusion_studio.core.samplers import SamplerKind
from diffusion_studio.core.schedule import ScheduleKind
from diffusion_studio.errors import BundleError

VALID = {
    "format": "diffusion-studio-bundle", "format_version": 1,
    "name": "shapes",
    "image": {"size": 32, "channels": 3},
    "diffusion": {"T": 1000, "schedule": "linear", "prediction": "epsilon"},
    "sampler_defaults": {"sampler": "dpmpp-2m", "steps": 20, "guidance": 3.0},
    "unet": {"file": "unet.onnx", "fp16_file": None, "opset": 18, "parameters": 1234567,
             "flops_per_forward": 400000000},
    "conditioning": {"text_encoder": "shared", "max_tokens": 32, "embedding_dim": 384,
                     "text_encoder_sha256": "a" * 64, "tokenizer_sha256": "b" * 64},
    "provenance": {"run": "runs/shapes", "step": 12000, "weights": "ema", "metrics": {"loss": 0.03},
                   "exporter": "diffusion-studio 0.1.0", "torch": "2.13.0"},
    "files": {"unet.onnx": {"sha256": "c" * 64, "bytes": 123}},
}
MISSING = object()


def test_valid_example_parses_and_round_trips() -> None:
    spec = parse_model_json(copy.deepcopy(VALID))
    assert isinstance(spec, BundleSpec)
    assert spec.name == "shapes" and spec.image.size == 32 and spec.image.channels == 3
    assert spec.diffusion.T == 1000 and spec.diffusion.schedule is ScheduleKind.LINEAR
    assert spec.sampler_defaults.sampler is SamplerKind.DPMPP_2M and spec.sampler_defaults.guidance == 3.0
    assert spec.unet.file == "unet.onnx" and spec.unet.fp16_file is None
    assert spec.conditioning.shared and spec.provenance.extra == {"torch": "2.13.0"}
    assert spec.files == {"unet.onnx": {"sha256": "c" * 64, "bytes": 123}}
    # flat views
    assert (spec.image_size, spec.channels, spec.T, spec.max_tokens, spec.embedding_dim) == (32, 3, 1000, 32, 384)
    assert (spec.sampler, spec.steps, spec.guidance, spec.unet_file) == ("dpmpp-2m", 20, 3.0, "unet.onnx")
    assert spec.to_dict() == VALID
    assert parse_model_json(spec.to_dict()) == spec
    with pytest.raises(AttributeError):
        spec.name = "other"  # type: ignore[misc]


def test_optional_sections() -> None:
    data = copy.deepcopy(VALID)
    del data["provenance"], data["files"], data["unet"]["fp16_file"]
    data["conditioning"]["text_encoder_sha256"] = None
    spec = parse_model_json(data)
    assert spec.files == {} and spec.provenance.run is None and spec.unet.fp16_file is None
    assert spec.conditioning.text_encoder_sha256 is None


def _set(data: dict, path: tuple[str, ...], value: object) -> None:
    for key in path[:-1]:
        data = data[key]
    if value is MISSING:
        del data[path[-1]]
    else:
        data[path[-1]] = value


BAD = [
    (("format",), "other-format", "format"),
    (("format",), MISSING, "format"),
    (("format_version",), 2, "format_version"),
    (("format_version",), "1", "format_version"),
    (("name",), "", "name"),
    (("name",), MISSING, "name"),
    (("image",), MISSING, "image"),
    (("image",), [32, 3], "image"),
    (("image", "size"), 0, "image.size"),
    (("image", "size"), 32.0, "image.size"),
    (("image", "channels"), 2, "image.channels"),
    (("image", "channels"), True, "image.channels"),
    (("diffusion", "T"), "abc", "diffusion.T"),
    (("diffusion", "T"), MISSING, "diffusion.T"),
    (("diffusion", "T"), -1, "diffusion.T"),
    (("diffusion", "schedule"), "sigmoid", "diffusion.schedule"),
    (("diffusion", "prediction"), "v", "diffusion.prediction"),
    (("sampler_defaults", "sampler"), "euler", "sampler_defaults.sampler"),
    (("sampler_defaults", "steps"), 0, "sampler_defaults.steps"),
    (("sampler_defaults", "steps"), 1001, "sampler_defaults.steps"),
    (("sampler_defaults", "guidance"), -1, "sampler_defaults.guidance"),
    (("sampler_defaults", "guidance"), "3", "sampler_defaults.guidance"),
    (("unet", "file"), "../unet.onnx", "unet.file"),
    (("unet", "file"), MISSING, "unet.file"),
    (("unet", "fp16_file"), 5, "unet.fp16_file"),
    (("unet", "opset"), 6, "unet.opset"),
    (("unet", "parameters"), -1, "unet.parameters"),
    (("unet", "flops_per_forward"), True, "unet.flops_per_forward"),
    (("conditioning", "text_encoder"), "/abs/encoder.onnx", "conditioning.text_encoder"),
    (("conditioning", "max_tokens"), 1, "conditioning.max_tokens"),
    (("conditioning", "embedding_dim"), 0, "conditioning.embedding_dim"),
    (("conditioning", "text_encoder_sha256"), "xyz", "conditioning.text_encoder_sha256"),
    (("conditioning", "tokenizer_sha256"), MISSING, "conditioning.tokenizer_sha256"),
    (("provenance", "step"), -5, "provenance.step"),
    (("provenance", "metrics"), [], "provenance.metrics"),
    (("files", "unet.onnx", "sha256"), "nothex", "files.unet.onnx.sha256"),
    (("files", "unet.onnx", "bytes"), -1, "files.unet.onnx.bytes"),
    (("files", "unet.onnx"), "abc", "files.unet.onnx"),
]


@pytest.mark.parametrize("path,value,field", BAD, ids=[f"{'.'.join(p)}={'MISSING' if v is MISSING else repr(v)}" for p, v, _ in BAD])
def test_each_wrong_field_is_named_in_one_sentence(path, value, field) -> None:
    data = copy.deepcopy(VALID)
    _set(data, path, value)
    with pytest.raises(BundleError) as e:
        parse_model_json(data, "bundle/model.json")
    msg = str(e.value)
    assert msg.startswith(f"bundle/model.json: field '{field}' ") and msg.endswith(".") and "\n" not in msg


def test_exact_message() -> None:
    data = copy.deepcopy(VALID)
    data["diffusion"]["T"] = "abc"
    with pytest.raises(BundleError, match=r"^model\.json: field 'diffusion\.T' must be a positive integer, got 'abc'\.$"):
        parse_model_json(data)
    data = copy.deepcopy(VALID)
    del data["diffusion"]["T"]
    with pytest.raises(BundleError, match=r"^model\.json: field 'diffusion\.T' is missing\.$"):
        parse_model_json(data)


def test_not_an_object() -> None:
    with pytest.raises(BundleError, match="JSON object"):
        parse_model_json([1, 2])


def test_read_and_write_model_json(tmp_path) -> None:
    with pytest.raises(BundleError, match="does not exist"):
        read_model_json(tmp_path / "nope")
    with pytest.raises(BundleError, match="no model.json"):
        read_model_json(tmp_path)
    (tmp_path / "model.json").write_text('{"format": "diffusion-studio-bundle",\n  "name": }')
    with pytest.raises(BundleError, match="not valid JSON.*line 2"):
        read_model_json(tmp_path)
    spec = parse_model_json(copy.deepcopy(VALID))
    path = write_model_json(tmp_path, spec)
    assert sorted(os.listdir(tmp_path)) == ["model.json"]
    assert json.loads(path.read_text()) == VALID
    assert read_model_json(tmp_path) == spec and read_model_json(path) == spec
    bad = copy.deepcopy(VALID)
    bad["image"]["size"] = "big"
    path.write_text(json.dumps(bad))
    with pytest.raises(BundleError) as e:
        read_model_json(tmp_path)
    assert str(e.value).startswith(f"{path}: field 'image.size'")


def test_sha256_file(tmp_path) -> None:
    p = tmp_path / "f.bin"
    p.write_bytes(b"abc")
    assert sha256_file(p) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    big = os.urandom(3 * (1 << 20) + 17)
    p.write_bytes(big)
    assert sha256_file(p) == hashlib.sha256(big).hexdigest()
