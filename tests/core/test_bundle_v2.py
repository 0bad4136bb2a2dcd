"""model.json format_version 2: the new diffusion and conditioning fields, their defaults and refusals."""

from __future__ import annotations

import copy
import json

import pytest

from diffusion_studio.core.bundle import (
    ConditioningKind,
    parse_model_json,
    read_model_json,
    write_model_json,
)
from diffusion_studio.core.prediction import PredictionKind, VarianceKind
from diffusion_studio.core.schedule import ScheduleKind
from diffusion_studio.errors import BundleError
from diffusion_studio.paths import default_model_dir

V2 = {
    "format": "diffusion-studio-bundle", "format_version": 2, "name": "imported",
    "image": {"size": 16, "channels": 3},
    "diffusion": {"T": 1000, "schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02,
                  "prediction": "v_prediction", "variance": "learned_range", "clip_sample": False,
                  "clip_sample_range": 2.5},
    "sampler_defaults": {"sampler": "ddim", "steps": 20, "guidance": 1.0},
    "unet": {"file": "unet.onnx", "fp16_file": None, "opset": 18, "parameters": 10, "flops_per_forward": 100},
    "conditioning": {"kind": "class", "num_classes": 3, "class_names": ["cat", "dog", "bird"]},
    "provenance": {"run": None, "step": None, "weights": "diffusers", "metrics": {}, "exporter": "x",
                   "source": "ddpm-tiny", "scheduler": "DDPMScheduler"},
    "files": {},
}


def _with(edit) -> dict:
    data = copy.deepcopy(V2)
    edit(data)
    return data


def test_v2_fields_parse_and_round_trip():
    spec = parse_model_json(V2)
    d, co = spec.diffusion, spec.conditioning
    assert (d.T, d.schedule, d.beta_start, d.beta_end) == (1000, ScheduleKind.LINEAR, 0.0001, 0.02)
    assert (d.prediction, d.variance, d.clip_sample, d.clip_sample_range) == (
        PredictionKind.V_PREDICTION, VarianceKind.LEARNED_RANGE, False, 2.5)
    assert (co.kind, co.num_classes, co.class_names) == (ConditioningKind.CLASS, 3, ("cat", "dog", "bird"))
    assert co.text_encoder is None and not co.shared
    assert spec.conditioning_kind == "class" and spec.variance == "learned_range" and spec.prediction == "v_prediction"
    assert spec.to_dict() == V2
    assert parse_model_json(json.loads(json.dumps(spec.to_dict()))) == spec


def test_v2_defaults_are_format_1_meanings():
    data = _with(lambda d: d.update(
        diffusion={"T": 100, "schedule": "cosine", "prediction": "epsilon"}, conditioning={"kind": "none"}))
    spec = parse_model_json(data)
    d = spec.diffusion
    assert (d.beta_start, d.beta_end, d.variance, d.clip_sample, d.clip_sample_range) == (
        None, None, VarianceKind.FIXED_LARGE, True, 1.0)
    assert spec.conditioning.kind is ConditioningKind.NONE and spec.conditioning.num_classes is None
    # written back with every format-2 field explicit
    assert spec.to_dict()["diffusion"] == {"T": 100, "schedule": "cosine", "prediction": "epsilon",
                                           "beta_start": None, "beta_end": None, "variance": "fixed_large",
                                           "clip_sample": True, "clip_sample_range": 1.0}
    assert spec.to_dict()["conditioning"] == {"kind": "none"}


def test_v2_text_kind_keeps_every_v1_field_and_shared():
    shipped = json.loads((default_model_dir() / "model.json").read_text())
    data = copy.deepcopy(shipped)
    data["format_version"] = 2
    data["conditioning"] = {"kind": "text", **shipped["conditioning"]}
    spec = parse_model_json(data)
    assert spec.conditioning.kind is ConditioningKind.TEXT and spec.conditioning.shared
    assert (spec.max_tokens, spec.embedding_dim) == (shipped["conditioning"]["max_tokens"],
                                                     shipped["conditioning"]["embedding_dim"])
    # a format-2 text block without `kind` is text too
    del data["conditioning"]["kind"]
    assert parse_model_json(data).conditioning.kind is ConditioningKind.TEXT


def test_shipped_v1_bundle_still_loads_and_writes_back_unchanged(tmp_path):
    raw = json.loads((default_model_dir() / "model.json").read_text())
    assert raw["format_version"] == 1
    spec = read_model_json(default_model_dir())
    assert spec.format_version == 1 and spec.conditioning.kind is ConditioningKind.TEXT
    assert spec.diffusion.variance is VarianceKind.FIXED_LARGE and spec.diffusion.beta_start is None
    write_model_json(tmp_path, spec)
    assert json.loads((tmp_path / "model.json").read_text()) == raw  # no format-2 field appears


def test_scaled_linear_is_a_v2_schedule():
    spec = parse_model_json(_with(lambda d: d["diffusion"].update(schedule="scaled_linear", beta_start=0.00085,
                                                                  beta_end=0.012)))
    assert spec.diffusion.schedule is ScheduleKind.SCALED_LINEAR


@pytest.mark.parametrize("edit, field, words", [
    (lambda d: d["diffusion"].update(prediction="x0"), "diffusion.prediction", "must be one of"),
    (lambda d: d["diffusion"].update(variance="learned"), "diffusion.variance", "must be one of"),
    (lambda d: d["diffusion"].update(clip_sample="yes"), "diffusion.clip_sample", "true or false"),
    (lambda d: d["diffusion"].update(clip_sample_range=0), "diffusion.clip_sample_range", "positive"),
    (lambda d: d["diffusion"].update(beta_start=None), "diffusion.beta_start", "give both or neither"),
    (lambda d: d["diffusion"].update(beta_end=1.5), "diffusion.beta_end", "(0, 1)"),
    (lambda d: d["diffusion"].update(beta_start=0.03), "diffusion.beta_start", "at most diffusion.beta_end"),
    (lambda d: d["diffusion"].update(schedule="cosine"), "diffusion.beta_start", "null for the cosine"),
    (lambda d: d["diffusion"].update(schedule="sigmoid"), "diffusion.schedule", "must be one of"),
    (lambda d: d["conditioning"].update(kind="image"), "conditioning.kind", "must be one of"),
    (lambda d: d["conditioning"].update(num_classes=0), "conditioning.num_classes", "from 1 to"),
    (lambda d: d["conditioning"].pop("num_classes"), "conditioning.num_classes", "is missing"),
    (lambda d: d["conditioning"].update(class_names=["a", "b"]), "conditioning.class_names", "list of 3 names"),
    (lambda d: d["conditioning"].update(class_names=["a", "", "c"]), "conditioning.class_names[1]", "non-empty"),
    (lambda d: d["conditioning"].update(max_tokens=8), "conditioning.max_tokens", "does not belong"),
    (lambda d: d.update(conditioning={"kind": "none", "num_classes": 3}), "conditioning.num_classes",
     "does not belong to conditioning kind 'none'"),
    (lambda d: d.update(conditioning={"kind": "text", "num_classes": 3}), "conditioning.num_classes",
     "does not belong to conditioning kind 'text'"),
    (lambda d: d.update(conditioning={"kind": "text"}), "conditioning.text_encoder", "is missing"),
    (lambda d: d["image"].update(size=4), "image.size", "from 8 to 1024"),
    (lambda d: d["image"].update(size=2048), "image.size", "from 8 to 1024"),
    (lambda d: d["image"].update(channels=2), "image.channels", "1, 3 or 4"),
    (lambda d: d.update(format_version=3), "format_version", "newer than this app supports"),
])
def test_bad_v2_field_is_one_sentence_naming_it(edit, field, words):
    with pytest.raises(BundleError) as e:
        parse_model_json(_with(edit), "model.json")
    message = str(e.value)
    assert message.startswith(f"model.json: field '{field}' ") and words in message
    assert message.endswith(".") and "\n" not in message


@pytest.mark.parametrize("block, key, value", [
    ("diffusion", "variance", "fixed_small"), ("diffusion", "beta_start", 0.001),
    ("diffusion", "clip_sample", False), ("conditioning", "kind", "text"),
])
def test_format_2_fields_in_a_format_1_document_are_refused(block, key, value):
    data = json.loads((default_model_dir() / "model.json").read_text())
    data[block][key] = value
    with pytest.raises(BundleError, match=rf"field '{block}\.{key}' needs format_version 2"):
        parse_model_json(data)


@pytest.mark.parametrize("edit", [
    lambda d: d["diffusion"].update(prediction="v_prediction"),
    lambda d: d["diffusion"].update(schedule="scaled_linear"),
])
def test_format_1_keeps_its_narrow_choices(edit):
    data = json.loads((default_model_dir() / "model.json").read_text())
    edit(data)
    with pytest.raises(BundleError, match="must be one of"):
        parse_model_json(data)
