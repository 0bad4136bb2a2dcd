"""`python -m benchmarks --quick` runs every CPU table and writes the JSON the docs are made from.

Not a timed test: it checks the keys, that each ratio is the ratio of its own two timings,
that the markdown shows the JSON's numbers, and the target judging on hand-made results.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from diffusion_studio.paths import default_model_dir

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # benchmarks/ is a folder of the repository, not an installed package
    sys.path.insert(0, str(ROOT))

from benchmarks import report  # noqa: E402


@pytest.fixture(scope="module")
def quick(tmp_path_factory) -> tuple[dict, str]:
    out = tmp_path_factory.mktemp("bench") / "results.json"
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rendered = subprocess.run([sys.executable, "-m", "benchmarks", "--markdown", str(out)], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
    assert rendered.returncode == 0, rendered.stderr
    assert rendered.stdout.strip() == proc.stdout.strip()  # the saved JSON renders as the run printed
    return json.loads(out.read_text()), rendered.stdout


@pytest.mark.slow
def test_quick_json_has_every_table_and_the_machine(quick):
    result, _ = quick
    assert result["quick"] is True
    machine = result["machine"]
    assert machine["cpu"] and machine["physical_cores"] >= 1
    assert machine["versions"]["onnxruntime"] or machine["versions"]["onnxruntime-gpu"]
    assert "CPUExecutionProvider" in machine["onnxruntime_providers"]
    assert result["matmul_peak"]["gflops"] > 0

    net = result["network"]
    assert [r["batch"] for r in net["rows"]] == [1, 2]
    assert net["flops_per_image"] == 578117632  # model.json of the shipped bundle
    for row in net["rows"]:
        assert row["speedup_vs_torch_eager"] == pytest.approx(row["torch_eager_ms"] / row["onnxruntime_ms"])
        assert row["onnxruntime_fraction_of_peak"] == pytest.approx(
            row["onnxruntime_gflops"] / result["matmul_peak"]["gflops"])

    options = result["ort_options"]["rows"]
    assert options[0]["speedup_vs_default"] == 1.0 and options[0]["max_abs_diff"] == 0.0
    assert len(options) == 7 and all(r["max_abs_diff"] < 1e-3 for r in options)  # same numbers, other speed

    e2e = result["e2e"]
    shipped = json.loads((default_model_dir() / "model.json").read_text())["sampler_defaults"]["guidance"]
    assert e2e["sampler"] == "dpmpp-2m" and e2e["guidance"] == shipped > 1.0  # the bundle's, both halves run
    assert e2e["speedup_vs_torch_eager"] == pytest.approx(e2e["torch_eager_s"] / e2e["ours_s"])
    assert e2e["diffusers_parameters"] == 1973795  # same size class as ours (1.74M)
    assert e2e["speedup_vs_diffusers"] == pytest.approx(e2e["diffusers_s"] / e2e["ours_s"])

    training = result["training"]
    assert training["ours_parameters"] == 1744771 and training["diffusers_parameters"] == 1973795
    assert training["speedup_vs_diffusers"] == pytest.approx(
        training["ours_images_per_s"] / training["diffusers_images_per_s"])

    assert result["startup"]["cli"]["seconds"] > 0
    assert result["startup"]["app"]["seconds"] > 0
    assert result["preview"]["overhead_s"] == pytest.approx(
        result["preview"]["preview_on_s"] - result["preview"]["preview_off_s"])
    assert [t["key"] for t in result["targets"]] == [key for key, *_ in report.TARGETS]
    assert all(t["met"] is None for t in result["targets"])  # a smoke run judges nothing


@pytest.mark.slow
def test_quick_markdown_shows_the_numbers(quick):
    result, text = quick
    for heading in ("One network call", "ONNX Runtime session options (CPU)", "One image end to end",
                    "Training throughput", "Start-up",
                    "Live preview overhead", "Targets (issue 14)"):
        assert f"### {heading}" in text
    row = result["network"]["rows"][0]
    assert f"| 1 | {row['onnxruntime_ms']:.1f} ms | {row['torch_eager_ms']:.1f} ms |" in text
    assert f"{result['e2e']['speedup_vs_diffusers']:.2f}×" in text
    assert "not judged" in text and "smoke run" in text


def test_targets_are_judged_against_their_bounds():
    result = {"e2e": {"speedup_vs_diffusers": 4.2}, "training": {"speedup_vs_diffusers": 1.9},
              "startup": {"cli": {"seconds": 0.55}, "app": {"seconds": None}}}
    judged = {t["key"]: t["met"] for t in report.judge_targets(result)}
    assert judged == {"e2e.speedup_vs_diffusers": True, "training.speedup_vs_diffusers": False,
                      "startup.cli.seconds": True, "startup.app.seconds": None}
    text = report.markdown({"targets": report.judge_targets(result)})
    assert "| training at least 2× diffusers' images/s | 1.90 | **missed** |" in text
    assert "| app start to first paint ≤ 1.5 s | – | not measured |" in text


def test_gpu_table_says_why_it_is_empty():
    text = "\n".join(report.gpu_markdown({"available": False, "reason": "no CUDA provider"}))
    assert "Not measured: no CUDA provider." in text


def test_markdown_of_a_missing_file_is_one_line_and_exit_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--markdown", str(tmp_path / "none.json")], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: cannot read") and proc.stderr.count("\n") == 1
