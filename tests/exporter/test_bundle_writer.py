"""Atomic bundle folders and model.json facts (no torch needed)."""

from __future__ import annotations

import json

import pytest

from diffusion_studio.errors import BundleError, UsageError
from exporter import bundle_writer as bw


def _spec(**overrides):
    args = dict(
        name="demo", image_size=32, channels=3, T=1000, schedule="cosine",
        sampler_defaults={"sampler": "ddim", "steps": 50, "guidance": 4.0},
        unet={"file": "unet.onnx", "fp16_file": None, "opset": 18, "parameters": 10, "flops_per_forward": 20},
        conditioning={"text_encoder": "shared", "max_tokens": 32, "embedding_dim": 384,
                      "text_encoder_sha256": "a" * 64, "tokenizer_sha256": "b" * 64},
        provenance={"run": "/runs/x", "step": 12, "weights": "ema", "metrics": {"loss": 0.25},
                    "exporter": "torch.onnx dynamo"},
    )
    args.update(overrides)
    return bw.model_json(**args)


def test_staged_bundle_renames_only_on_success(tmp_path):
    target = tmp_path / "bundles" / "b"
    with pytest.raises(RuntimeError):
        with bw.staged_bundle(target, force=False) as tmp:
            (tmp / "unet.onnx").write_bytes(b"half")
            raise RuntimeError("export failed")
    assert list(tmp_path.iterdir()) == []  # not even the parent folder it had to create
    with bw.staged_bundle(target, force=False) as tmp:
        (tmp / "model.json").write_text("{}")
        assert not target.exists()  # nothing visible until the end
    assert sorted(p.name for p in target.iterdir()) == ["model.json"]
    assert [p.name for p in target.parent.iterdir()] == ["b"]


def test_force_swaps_in_a_complete_bundle(tmp_path):
    target = tmp_path / "b"
    target.mkdir()
    (target / "model.json").write_text("old")
    (target / "old.onnx").write_text("old")
    with pytest.raises(UsageError, match="already exists; pass --force"):
        with bw.staged_bundle(target, force=False):
            pass
    with bw.staged_bundle(target, force=True) as tmp:
        (tmp / "model.json").write_text("new")
        assert (target / "model.json").read_text() == "old"
    assert sorted(p.name for p in target.iterdir()) == ["model.json"]
    assert (target / "model.json").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["b"]


def test_target_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "b").write_text("x")
    with pytest.raises(UsageError, match="exists and is not a folder"):
        bw.check_target(tmp_path / "b", force=True)


def test_model_json_follows_the_contract():
    spec = _spec()
    assert spec["format"] == "diffusion-studio-bundle" and spec["format_version"] == 1
    assert spec["image"] == {"size": 32, "channels": 3}
    assert spec["diffusion"] == {"T": 1000, "schedule": "cosine", "prediction": "epsilon"}
    assert spec["files"] == {}
    with pytest.raises(BundleError, match="sampler_defaults.steps"):
        _spec(sampler_defaults={"sampler": "ddim", "steps": 5000, "guidance": 1.0})


def test_metadata_props_flatten_the_facts_without_files():
    spec = _spec(files={"unet.onnx": {"sha256": "c" * 64, "bytes": 3}})
    props = bw.metadata_props(spec)
    assert props["diffusion_studio.diffusion.T"] == "1000"
    assert props["diffusion_studio.sampler_defaults.guidance"] == "4.0"
    assert props["diffusion_studio.unet.fp16_file"] == "null"
    assert props["diffusion_studio.provenance.metrics.loss"] == "0.25"
    assert props["diffusion_studio.name"] == "demo"
    assert not any(".files" in key for key in props)
    assert json.loads(props["diffusion_studio.model_json"]) == {k: v for k, v in spec.items() if k != "files"}


def test_write_json_atomic_leaves_no_temp_file(tmp_path):
    bw.write_json_atomic(tmp_path / "v.json", {"a": [1, 2]})
    assert json.loads((tmp_path / "v.json").read_text()) == {"a": [1, 2]}
    assert [p.name for p in tmp_path.iterdir()] == ["v.json"]
