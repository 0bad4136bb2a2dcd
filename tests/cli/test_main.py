"""`diffusion_studio.cli.main` error mapping: a model failure (NaN) and an unexpected exception
end in one `error:` line and exit 1; DIFFUSION_STUDIO_DEBUG=1 lets the traceback through."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from diffusion_studio.cli import DEBUG_ENV, main

REPO = Path(__file__).resolve().parents[2]
NAN_SENTENCE = "error: The model produced NaN or infinite values, so there is no image."


def test_nan_output_exits_1_with_one_line_and_writes_nothing(capsys, nan_bundle, tmp_path, monkeypatch):
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    out = tmp_path / "o.png"
    code = main(["generate", "a red circle", "--model", str(nan_bundle), "--steps", "2", "--seed", "1",
                 "--device", "cpu", "-o", str(out)])
    captured = capsys.readouterr()
    assert code == 1
    assert captured.err.splitlines() == [NAN_SENTENCE]
    assert "Traceback" not in captured.err and captured.out == ""
    assert list(tmp_path.iterdir()) == []


def _boom(*args, **kwargs):
    raise KeyError("lost\nkey")


def test_unexpected_exception_exits_1_with_one_line(capsys, tiny_bundle, tmp_path, monkeypatch):
    import diffusion_studio.inference.pipeline as pipeline_module

    monkeypatch.delenv(DEBUG_ENV, raising=False)
    monkeypatch.setattr(pipeline_module.Pipeline, "generate", _boom)
    code = main(["generate", "x", "--model", str(tiny_bundle), "--device", "cpu", "-o", str(tmp_path / "o.png")])
    err = capsys.readouterr().err
    assert code == 1
    assert err.splitlines() == [
        f"error: internal error: KeyError: 'lost\\nkey' (run with {DEBUG_ENV}=1 for the traceback)"]


def test_debug_env_re_raises_the_exception(tiny_bundle, tmp_path, monkeypatch):
    import diffusion_studio.inference.pipeline as pipeline_module

    monkeypatch.setenv(DEBUG_ENV, "1")
    monkeypatch.setattr(pipeline_module.Pipeline, "generate", _boom)
    with pytest.raises(KeyError, match="lost"):
        main(["generate", "x", "--model", str(tiny_bundle), "--device", "cpu", "-o", str(tmp_path / "o.png")])


def test_subprocess_nan_bundle_exit_1_no_traceback(nan_bundle, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop(DEBUG_ENV, None)
    done = subprocess.run(
        [sys.executable, "-m", "diffusion_studio", "generate", "x", "--model", str(nan_bundle), "--steps", "2",
         "-o", str(tmp_path / "o.png")],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert done.returncode == 1
    assert done.stderr.splitlines() == [NAN_SENTENCE]


def test_eval_of_a_nan_model_exits_1_with_one_line(capsys, nan_bundle, tmp_path, monkeypatch):
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    code = main(["eval", str(nan_bundle), "--n", "2", "--steps", "2", "--device", "cpu", "--latency-images", "0",
                 "--json", str(tmp_path / "r.json")])
    err = capsys.readouterr().err
    assert code == 1 and err.splitlines() == [NAN_SENTENCE]
    assert not (tmp_path / "r.json").exists()
