"""`python -m exporter inspect BUNDLE`: summary, graphs, hashes, parity, providers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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
    assert raw["provenance"]["run"].startswith("../../")
    assert f"training   run {raw['provenance']['run']}, step 4" in out
    assert (f"vocabulary {len(raw['vocabulary'])} words: red, orange, yellow, green, blue, purple, circle, "
            "square, triangle, small, large, top, …") in out
    for name in ("unet.onnx", "unet.fp16.onnx", "validation.json"):
        line = next(row for row in out.splitlines() if row.startswith(f"{name}: "))
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
    line = next(row for row in result.out.splitlines() if row.startswith("validation.json: "))
    assert "DOES NOT MATCH model.json" in line
    assert "loads in the app: yes" in result.out  # the loader checks the graphs, not the report


def test_inspect_bundle_without_report(run_cli, raw_export):
    result = run_cli("inspect", raw_export[0])
    assert result.rc == 0, result.err
    assert "parity: no validation.json (exported with --no-validate)" in result.out
    assert "name       tiny raw" in result.out and "raw weights" in result.out


# --- bad bundles: one sentence, exit 2, never a traceback (issue 9) ---------------------------

def _tiny_graph(path) -> None:
    """A valid ONNX graph with the U-Net's inputs and output (eps = x): enough for inspect."""
    import onnx
    from onnx import TensorProto, helper

    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8]),
              helper.make_tensor_value_info("t", TensorProto.INT64, ["N"]),
              helper.make_tensor_value_info("context", TensorProto.FLOAT, ["N", 16, 384]),
              helper.make_tensor_value_info("context_mask", TensorProto.FLOAT, ["N", 16])]
    output = helper.make_tensor_value_info("eps", TensorProto.FLOAT, ["N", 3, 8, 8])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["eps"])], "tiny", inputs, [output])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10  # what this ONNX Runtime reads
    onnx.save(model, str(path))


@pytest.fixture
def small_bundle(tmp_path):
    """A bundle folder that passes the model.json schema, with a tiny real graph (no torch)."""
    from exporter import bundle_writer as bw

    folder = tmp_path / "small"
    folder.mkdir()
    _tiny_graph(folder / "unet.onnx")
    spec = bw.model_json(
        name="small", image_size=8, channels=3, T=100, schedule="linear",
        sampler_defaults={"sampler": "ddim", "steps": 20, "guidance": 2.0},
        unet={"file": "unet.onnx", "fp16_file": None, "opset": 18, "parameters": 0, "flops_per_forward": 1},
        conditioning={"text_encoder": "shared", "max_tokens": 16, "embedding_dim": 384,
                      "text_encoder_sha256": None, "tokenizer_sha256": None},
        provenance={"run": None, "step": 1, "weights": "ema", "metrics": {}, "exporter": "test"},
        files=bw.file_facts(folder, ["unet.onnx"]),
    )
    bw.write_json_atomic(folder / "model.json", spec)
    return folder


def _assert_one_line_exit_2(result, *phrases: str) -> None:
    assert result.rc == 2, (result.out, result.err)
    lines = result.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.err
    assert "Traceback" not in result.err
    for phrase in phrases:
        assert phrase in lines[0], lines[0]
    assert result.out == ""


def _report(**overrides):
    report = {
        "bound_max_abs": 1e-4, "passed": True, "unavailable_providers": {"CUDAExecutionProvider": "no GPU"},
        "network": [{"provider": "CPUExecutionProvider", "file": "unet.onnx", "gated": True, "max_abs": 2e-6,
                     "mean_abs": 1e-7, "cases": [{"t": 1, "batch": 1, "max_abs": 2e-6, "mean_abs": 1e-7}]}],
        "sampling": [{"provider": "CPUExecutionProvider", "file": "unet.onnx", "sampler": "ddim", "steps": 20,
                      "guidance": 2.0, "max_abs": 1e-5, "mean_abs": 1e-6, "max_abs_uint8": 0}],
        "failures": [],
    }
    report.update(overrides)
    return report


def test_inspect_of_a_small_bundle_with_a_report(run_cli, small_bundle):
    (small_bundle / "validation.json").write_text(json.dumps(_report()))
    result = run_cli("inspect", small_bundle)
    assert result.rc == 0, result.err
    assert "parity vs PyTorch (fp32 bound 0.0001 max |Δε|): PASSED" in result.out
    assert "sampling ddim       20 steps w=2" in result.out
    assert "CUDAExecutionProvider: not available here (no GPU)" in result.out
    assert "CPUExecutionProvider: yes" in result.out


@pytest.mark.parametrize(
    ("text", "phrases"),
    [
        ("{not json", ["The parity report", "validation.json", "is not valid JSON: Expecting property name"]),
        ("[" * 100_000 + "]" * 100_000, ["parity report", "nests arrays or objects too deeply"]),
        ('"a string"', ["validation.json",
                        "is not one this exporter wrote: the document must be an object, got 'a string'"]),
        ('{"results": []}', ["is not one this exporter wrote: it has no bound_max_abs"]),
        (json.dumps(_report(passed="yes")), ["passed must be true or false, got 'yes'"]),
        (json.dumps(_report(network=[{"provider": "CPU", "file": "unet.onnx", "gated": True, "max_abs": "big"}])),
         ["network[0].max_abs must be a number, got 'big'"]),
        (json.dumps(_report(sampling=[{"sampler": "ddim"}])), ["it has no sampling[0].steps"]),
        (json.dumps(_report(unavailable_providers=[])), ["unavailable_providers must be an object, got list"]),
    ],
)
def test_inspect_with_a_bad_validation_json(run_cli, small_bundle, text, phrases):
    (small_bundle / "validation.json").write_text(text)
    _assert_one_line_exit_2(run_cli("inspect", small_bundle), *phrases)


def test_inspect_with_a_validation_json_outside_the_bundle(run_cli, small_bundle, tmp_path):
    (tmp_path / "elsewhere.json").write_text(json.dumps(_report()))
    (small_bundle / "validation.json").symlink_to(tmp_path / "elsewhere.json")
    _assert_one_line_exit_2(run_cli("inspect", small_bundle), "leads outside the folder")


def test_inspect_with_a_deep_model_json(run_cli, small_bundle):
    (small_bundle / "model.json").write_text("[" * 100_000 + "]" * 100_000)
    _assert_one_line_exit_2(run_cli("inspect", small_bundle), "model.json", "too deeply")


@pytest.mark.parametrize("T", [10**12, 10**100])
def test_inspect_with_a_huge_T(run_cli, small_bundle, T):
    raw = json.loads((small_bundle / "model.json").read_text())
    raw["diffusion"]["T"] = T
    (small_bundle / "model.json").write_text(json.dumps(raw))
    _assert_one_line_exit_2(run_cli("inspect", small_bundle), "diffusion.T", "must be at most 100000")


def test_inspect_refuses_to_hash_a_graph_outside_the_bundle(run_cli, small_bundle, tmp_path):
    (small_bundle / "unet.onnx").rename(tmp_path / "outside.onnx")
    (small_bundle / "unet.onnx").symlink_to(tmp_path / "outside.onnx")
    result = run_cli("inspect", small_bundle, "--json")
    assert result.rc == 0, result.err
    facts = json.loads(result.out)
    unet = facts["graphs"][0]
    assert unet["present"] is False and "leads outside the folder" in unet["refused"]
    assert "sha256" not in unet and facts["providers"] == {}
    assert facts["loads_in_app"].startswith("no: ")


def test_python_m_exporter_inspect_is_one_line_for_a_huge_T(small_bundle):
    """The real entry point (a fresh interpreter): one line on stderr, exit 2."""
    raw = json.loads((small_bundle / "model.json").read_text())
    raw["diffusion"]["T"] = 10**100
    (small_bundle / "model.json").write_text(json.dumps(raw))
    env = {k: v for k, v in os.environ.items() if k != "DIFFUSION_STUDIO_DEBUG"}
    proc = subprocess.run([sys.executable, "-m", "exporter", "inspect", str(small_bundle)], capture_output=True,
                          text=True, env=env, check=False, cwd=Path(__file__).resolve().parents[2], timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and "diffusion.T" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
