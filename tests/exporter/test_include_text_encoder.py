"""`--include-text-encoder`: the bundle carries the shared encoder, pinned by the same sha256s,
and the app's loader uses the bundle's copy (it loads even where the shared one is absent)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from diffusion_studio.core.files import sha256_file
from diffusion_studio.inference.bundle_loader import load_bundle
from diffusion_studio.paths import text_encoder_dir

SHARED = text_encoder_dir()


@pytest.fixture(scope="module")
def bundled(tmp_path_factory, tiny_run, ema_export, run_cli) -> Path:
    """The run exported with --include-text-encoder. The U-Net graph is the one `ema_export` made
    from the same weights (the U-Net export has its own tests; what is under test is the encoder)."""
    import onnx

    import exporter.export
    from exporter.unet_export import DYNAMO, ExportInfo

    ema_bundle = ema_export[0]
    opset = json.loads((ema_bundle / "model.json").read_text())["unet"]["opset"]

    def export_unet(model, spec, opset_requested):
        assert opset_requested == opset
        return onnx.load(ema_bundle / "unet.onnx"), ExportInfo(exporter=DYNAMO, opset=opset, fallback_reason=None)

    out = tmp_path_factory.mktemp("bundles") / "self-contained"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(exporter.export, "export_unet", export_unet)
        result = run_cli(tiny_run, "--out", out, "--include-text-encoder", "--no-validate")
    assert result.rc == 0, result.err
    assert "text_encoder.onnx" in result.out.splitlines()[-1]
    return out


def test_bundle_holds_the_shared_encoder_with_its_pinned_hashes(bundled):
    raw = json.loads((bundled / "model.json").read_text())
    conditioning = raw["conditioning"]
    assert conditioning["text_encoder"] == "text_encoder.onnx"
    assert conditioning["text_encoder_sha256"] == sha256_file(SHARED / "text_encoder.onnx")
    assert conditioning["tokenizer_sha256"] == sha256_file(SHARED / "tokenizer.json")
    copied = {"text_encoder.onnx", "tokenizer.json"}
    if (SHARED / "encoder.json").is_file():  # the encoder's provenance travels with it
        copied.add("encoder.json")
    assert sorted(p.name for p in bundled.iterdir()) == sorted({"model.json", "unet.onnx"} | copied)
    assert set(raw["files"]) == {"unet.onnx"} | copied
    for name in copied:
        assert (bundled / name).read_bytes() == (SHARED / name).read_bytes()
        assert raw["files"][name] == {"sha256": sha256_file(bundled / name), "bytes": (bundled / name).stat().st_size}
    assert [p.name for p in bundled.parent.iterdir()] == [bundled.name]  # no temp folder left


def test_loader_uses_the_bundle_copy_even_without_the_shared_encoder(bundled, tmp_path, monkeypatch):
    import diffusion_studio.inference.bundle_loader as bundle_loader
    from diffusion_studio.inference.pipeline import GenerationRequest, Pipeline
    from diffusion_studio.inference.text_encoder import TextEncoder

    moved = tmp_path / "elsewhere"
    shutil.copytree(bundled, moved)
    empty = tmp_path / "no-shared-encoder"
    empty.mkdir()
    monkeypatch.setattr(bundle_loader, "text_encoder_dir", lambda: empty)
    bundle = load_bundle(moved, device="cpu")
    assert bundle.text_encoder.directory == moved.resolve()
    assert bundle.text_encoder.sha256 == sha256_file(SHARED / "text_encoder.onnx")

    context, mask = bundle.text_encoder.encode(["a red circle"])
    reference, reference_mask = TextEncoder(SHARED, max_tokens=bundle.max_tokens).encode(["a red circle"])
    np.testing.assert_array_equal(mask, reference_mask)
    np.testing.assert_allclose(context, reference, atol=0)  # the very same graph and tokenizer
    result = Pipeline(bundle).generate(GenerationRequest("a red circle", steps=2, seed=1))
    assert result.images.shape == (1, 8, 8, 3)


def test_include_text_encoder_without_a_shared_encoder_exits_2(tiny_run, run_cli, tmp_path, monkeypatch):
    import diffusion_studio.paths

    empty = tmp_path / "no-shared-encoder"
    empty.mkdir()
    monkeypatch.setattr(diffusion_studio.paths, "text_encoder_dir", lambda: empty)
    result = run_cli(tiny_run, "--out", tmp_path / "bundle", "--include-text-encoder", "--no-validate")
    assert result.rc == 2
    assert result.err.splitlines() == [
        f"error: Cannot include the text encoder: {empty / 'text_encoder.onnx'} is missing "
        "(make it with 'python -m exporter text-encoder --out DIR')."]
    assert not (tmp_path / "bundle").exists()
