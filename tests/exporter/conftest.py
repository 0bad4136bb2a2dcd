"""Fixtures of the exporter tests: a tiny trained run folder and its exported bundles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from exporter_testing import TOKENS, CliResult, run_cli, train_tiny_run


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    return train_tiny_run(tmp_path_factory.mktemp("runs") / "tiny-run")


@pytest.fixture(scope="session")
def ema_export(tmp_path_factory, tiny_run) -> tuple[Path, CliResult]:
    """The run exported with defaults (EMA weights, validated) plus --fp16."""
    out = tmp_path_factory.mktemp("bundles") / "tiny-ema"
    result = run_cli(tiny_run, "--out", out, "--fp16")
    assert result.rc == 0, result.err
    return out, result


@pytest.fixture(scope="session")
def raw_export(tmp_path_factory, tiny_run) -> tuple[Path, CliResult]:
    """The same run with --weights raw and --no-validate."""
    out = tmp_path_factory.mktemp("bundles") / "tiny-raw"
    result = run_cli(tiny_run, "--out", out, "--weights", "raw", "--no-validate", "--name", "tiny raw")
    assert result.rc == 0, result.err
    return out, result


@pytest.fixture
def fixed_inputs():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 3, 8, 8)).astype(np.float32)
    t = np.array([1, 50, 100], dtype=np.int64)
    context = rng.standard_normal((3, TOKENS, 384)).astype(np.float32)
    mask = (np.arange(TOKENS)[None] < np.array([[2], [4], [8]])).astype(np.float32)
    return x, t, context, mask
