"""`python -m exporter inspect BUNDLE`: summary, graphs, hashes, parity, providers."""

from __future__ import annotations

import json
import shutil

from diffusion_studio.core.files import sha256_file


def test_inspect_text(run_cli, ema_export):
    bundle, _ = ema_export
    raw = json.loads((bundle / "model.json").read_text())
    result = run_cli("inspect", bundle)
    assert result.rc == 0, result.err
    out = result.out
    assert "image      8x8, 3 channels" in out
    assert "T=100, linear schedule, predicts epsilon" in out
    assert "dpmpp-2m, 20 steps, guidance 2.0" in out
    assert f"{raw['unet']['parameters']:,} parameters" in out and "opset 18" in out
    assert "step 4, ema weights" in out and "torch.onnx dynamo" in out
    for name in ("unet.onnx", "unet.fp16.onnx", "validation.json"):
        line = next(l for l in out.splitlines() if l.startswith(f"{name}: "))
        assert sha256_file(bundle / name)[:16] in line and "(matches model.json)" in line
    assert "  input  x             float    [N, 3, 8, 8]" in out
    assert "  input  t             int64    [N]" in out
    assert "  input  context       float    [N, 16, 384]" in out
    assert "  input  context_mask  float    [N, 16]" in out
    assert "  output eps           float    [N, 3, 8, 8]" in out
    assert "float16" in out  # the fp16 graph's stored weights
    assert "PASSED" in out and "sampling ddim" in out
    assert "CPUExecutionProvider: yes" in out
    assert "loads in the app: yes" in out


def test_inspect_json_and_a_tampered_file(run_cli, ema_export, tmp_path):
    bundle = tmp_path / "copy"
    shutil.copytree(ema_export[0], bundle)
    facts = json.loads(run_cli("inspect", bundle, "--json").out)
    unet = next(g for g in facts["graphs"] if g["file"] == "unet.onnx")
    assert [i["name"] for i in unet["inputs"]] == ["x", "t", "context", "context_mask"]
    assert unet["outputs"] == [{"name": "eps", "dtype": "float", "shape": ["N", 3, 8, 8]}]
    assert unet["opset"] == 18 and unet["matches_model_json"] is True
    assert unet["bytes"] == (bundle / "unet.onnx").stat().st_size
    # The stored elements are the model's parameters plus a few constants (coordinate buffer, shapes).
    assert 0 <= unet["parameters"] - facts["model"]["unet"]["parameters"] < 1000
    assert facts["parity"]["passed"] is True
    assert facts["providers"]["CPUExecutionProvider"] == "yes"

    report = bundle / "validation.json"
    report.write_text(report.read_text().replace('"passed": true', '"passed": false', 1))
    result = run_cli("inspect", bundle)
    assert result.rc == 0
    line = next(l for l in result.out.splitlines() if l.startswith("validation.json: "))
    assert "DOES NOT MATCH model.json" in line
    assert "loads in the app: yes" in result.out  # the loader checks the graphs, not the report


def test_inspect_bundle_without_report(run_cli, raw_export):
    result = run_cli("inspect", raw_export[0])
    assert result.rc == 0, result.err
    assert "parity: no validation.json (exported with --no-validate)" in result.out
    assert "name       tiny raw" in result.out and "raw weights" in result.out
