import copy
import hashlib
import json
import os

import pytest

from diffusion_studio.core.bundle import (
    BundleSpec,
    parse_model_json,
    read_model_json,
    sha256_file,
    write_model_json,
)
from diffusion_studio.core.params import SamplerKind
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
    (("format_version",), 3, "format_version"),
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


@pytest.mark.parametrize("path,value,field", BAD,
                         ids=[f"{'.'.join(p)}={'MISSING' if v is MISSING else repr(v)}" for p, v, _ in BAD])
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
    with pytest.raises(BundleError,
                       match=r"^model\.json: field 'diffusion\.T' must be a positive integer, got 'abc'\.$"):
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


# --- hostile model.json (issue 9) -------------------------------------------------------------


@pytest.mark.parametrize("T", [10**12, 10**100, 100_001])
def test_huge_T_is_bounded_in_one_sentence(T) -> None:
    data = copy.deepcopy(VALID)
    data["diffusion"]["T"] = T
    shown = json.dumps(T) if len(json.dumps(T)) <= 60 else json.dumps(T)[:57] + "..."
    with pytest.raises(BundleError) as e:
        parse_model_json(data)
    assert str(e.value) == (f"model.json: field 'diffusion.T' must be at most 100000 "
                            f"(the most steps a schedule can hold), got {shown}.")


def test_T_at_the_bound_is_accepted() -> None:
    data = copy.deepcopy(VALID)
    data["diffusion"]["T"] = 100_000
    assert parse_model_json(data).T == 100_000


@pytest.mark.parametrize("T, shown", [(True, "true"), (1000.0, "1000.0"), (-3, "-3"), (0, "0"), (None, "null"),
                                      ("1000", "'1000'"), ([1000], "[1000]")])
def test_T_of_the_wrong_type_or_sign(T, shown) -> None:
    data = copy.deepcopy(VALID)
    data["diffusion"]["T"] = T
    with pytest.raises(BundleError) as e:
        parse_model_json(data)
    assert str(e.value) == f"model.json: field 'diffusion.T' must be a positive integer, got {shown}."


def test_huge_default_guidance_is_bounded() -> None:
    data = copy.deepcopy(VALID)
    data["sampler_defaults"]["guidance"] = 1e308
    with pytest.raises(BundleError) as e:
        parse_model_json(data)
    assert str(e.value) == "model.json: field 'sampler_defaults.guidance' must be a number from 0 to 100, got 1e+308."


def test_deeply_nested_model_json_is_one_sentence(tmp_path) -> None:
    (tmp_path / "model.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(BundleError) as e:
        read_model_json(tmp_path)
    assert str(e.value) == (f"{str(tmp_path / 'model.json')!r} nests arrays or objects too deeply to be read "
                            "(the limit is 64 levels).")


def test_model_json_that_is_not_utf8_or_a_file(tmp_path) -> None:
    (tmp_path / "model.json").write_bytes(b'{"name": "\xff"}')
    with pytest.raises(BundleError, match=r"model\.json' is not UTF-8 text \(invalid byte at offset 10\)\.$"):
        read_model_json(tmp_path)
    (tmp_path / "model.json").unlink()
    (tmp_path / "model.json").mkdir()
    with pytest.raises(BundleError, match=r"model\.json' is a folder, not a JSON file\.$"):
        read_model_json(tmp_path)


def test_model_json_symlinked_outside_the_bundle_is_refused_before_reading(tmp_path) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    outside = tmp_path / "elsewhere.json"
    outside.write_text(json.dumps(VALID))  # a valid model.json, but not the bundle's
    (bundle / "model.json").symlink_to(outside)
    with pytest.raises(BundleError) as e:
        read_model_json(bundle)
    assert str(e.value) == (f"the bundle's model.json in {str(bundle)!r} leads outside the folder "
                            f"(to {str(outside.resolve())!r}); refusing to read it.")
    (bundle / "model.json").unlink()
    (bundle / "model.json").symlink_to("/etc/passwd")
    with pytest.raises(BundleError, match=r"leads outside the folder \(to '/etc/passwd'\); refusing to read it\.$"):
        read_model_json(bundle / "model.json")
    (bundle / "model.json").unlink()
    (bundle / "model.json").symlink_to(tmp_path / "missing.json")  # dangling, outside
    with pytest.raises(BundleError, match=r"leads outside the folder"):
        read_model_json(bundle)


def test_model_json_symlinked_inside_the_bundle_is_read(tmp_path) -> None:
    (tmp_path / "model.v1.json").write_text(json.dumps(VALID))
    (tmp_path / "model.json").symlink_to("model.v1.json")
    assert read_model_json(tmp_path) == parse_model_json(copy.deepcopy(VALID))


def test_bundle_path_confines_names(tmp_path) -> None:
    from diffusion_studio.core.bundle import bundle_path

    assert bundle_path(tmp_path, "unet.onnx") == (tmp_path / "unet.onnx").resolve()
    with pytest.raises(BundleError) as e:
        bundle_path(tmp_path, "../unet.onnx")
    assert str(e.value) == (f"the bundle file '../unet.onnx' in {str(tmp_path)!r} leads outside the folder "
                            f"(to {str((tmp_path.parent / 'unet.onnx').resolve())!r}); refusing to read it.")


@pytest.mark.parametrize("path, value", [
    (("unet", "file"), "../unet.onnx"),
    (("unet", "fp16_file"), "../../etc/passwd"),
    (("conditioning", "text_encoder"), "../text_encoder.onnx"),
    (("files", "../validation.json"), {"sha256": "c" * 64, "bytes": 1}),
])
def test_dotdot_in_file_names_is_refused(path, value) -> None:
    data = copy.deepcopy(VALID)
    _set(data, path, value)
    with pytest.raises(BundleError) as e:
        parse_model_json(data)
    field = ".".join(path)
    assert str(e.value).startswith(f"model.json: field '{field}' must ")
    assert "inside the bundle folder" in str(e.value) and str(e.value).endswith(".")


# --- vocabulary (optional; format_version 1 stays loadable without it) ----------------------------


def test_vocabulary_absent_or_null_is_none_and_not_written() -> None:
    assert parse_model_json(copy.deepcopy(VALID)).vocabulary is None
    data = {**copy.deepcopy(VALID), "vocabulary": None}
    spec = parse_model_json(data)
    assert spec.vocabulary is None and "vocabulary" not in spec.to_dict()


def test_vocabulary_parses_drops_repeats_and_round_trips(tmp_path) -> None:
    data = {**copy.deepcopy(VALID), "vocabulary": ["red", "circle", "don't", "red", "café", "x2"]}
    spec = parse_model_json(data)
    assert spec.vocabulary == ("red", "circle", "don't", "café", "x2")
    assert spec.to_dict()["vocabulary"] == ["red", "circle", "don't", "café", "x2"]
    assert parse_model_json(spec.to_dict()) == spec
    write_model_json(tmp_path, spec)
    assert read_model_json(tmp_path).vocabulary == ("red", "circle", "don't", "café", "x2")
    assert json.loads((tmp_path / "model.json").read_text(encoding="utf-8"))["vocabulary"][3] == "café"


BAD_VOCABULARY = [
    ("red circle", "vocabulary", "must be a list of lowercase words or null, got 'red circle'"),
    ({"red": 1}, "vocabulary", "must be a list of lowercase words or null, got {\"red\": 1}"),
    (["red", 3], "vocabulary[1]", "must be a word of 1 to 40 characters, got 3"),
    (["red", ""], "vocabulary[1]", "must be a word of 1 to 40 characters, got ''"),
    (["x" * 41], "vocabulary[0]", "must be a word of 1 to 40 characters, got '" + "x" * 41 + "'"),
    (["Red"], "vocabulary[0]", "must be one lowercase word (letters, digits, an inner apostrophe), got 'Red'"),
    (["top left"], "vocabulary[0]",
     "must be one lowercase word (letters, digits, an inner apostrophe), got 'top left'"),
    (["red", "blue,"], "vocabulary[1]",
     "must be one lowercase word (letters, digits, an inner apostrophe), got 'blue,'"),
    (["w"] * 10_001, "vocabulary", "must hold at most 10,000 words, got 10,001"),
]


@pytest.mark.parametrize("value,field,problem", BAD_VOCABULARY, ids=[f for _, f, _ in BAD_VOCABULARY])
def test_bad_vocabulary_is_one_sentence(value, field, problem) -> None:
    data = {**copy.deepcopy(VALID), "vocabulary": value}
    with pytest.raises(BundleError) as e:
        parse_model_json(data, "b/model.json")
    assert str(e.value) == f"b/model.json: field '{field}' {problem}."


def test_vocabulary_at_the_bound_is_accepted() -> None:
    words = [f"w{i}" for i in range(10_000)]
    assert len(parse_model_json({**copy.deepcopy(VALID), "vocabulary": words}).vocabulary) == 10_000
