"""Parity report pieces that need no export: timesteps, fixed inputs, the no-provider gate."""

from __future__ import annotations

import numpy as np

from exporter.parity import check_timesteps, fixed_inputs, format_report, validate_export
from exporter.unet_export import GraphSpec


def test_timesteps_span_one_to_T():
    assert check_timesteps(1000) == [1, 250, 500, 750, 1000]
    assert check_timesteps(100) == [1, 25, 50, 75, 100]
    assert check_timesteps(2) == [1, 2]


def test_fixed_inputs_are_seeded_and_masked():
    spec = GraphSpec(channels=3, image_size=8, max_tokens=16, context_dim=384)
    x, context, mask = fixed_inputs(spec)
    x2, _, _ = fixed_inputs(spec)
    assert np.array_equal(x, x2) and x.shape == (4, 3, 8, 8) and x.dtype == np.float32
    assert context.shape == (4, 16, 384)
    assert mask.sum(axis=1).tolist() == [2, 5, 9, 16]  # real tokens first, then padding
    assert np.all(np.diff(mask, axis=1) <= 0)


def test_a_graph_no_provider_can_run_fails_validation(tmp_path):
    (tmp_path / "unet.onnx").write_bytes(b"this is not an ONNX model")
    spec = GraphSpec(channels=3, image_size=8, max_tokens=16, context_dim=384)
    report = validate_export(None, tmp_path, spec, T=100, schedule="linear", guidance=1.0,
                             conditioning={}, fp16_file=None)
    assert report["passed"] is False and report["providers"] == []
    assert "no execution provider here can run unet.onnx" in report["failures"][0]
    assert "CPUExecutionProvider" in report["unavailable_providers"]
    assert "FAILED" in format_report(report)
