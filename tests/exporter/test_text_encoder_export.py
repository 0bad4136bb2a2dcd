"""`python -m exporter text-encoder`: the shared MiniLM encoder, reproducible and safe to re-run."""

from pathlib import Path

import numpy as np
import pytest

from diffusion_studio.inference.text_encoder import TextEncoder
from exporter.cli import main

PROMPTS = ["", "a large red circle in the top left on a white background", "a blue triangle"]


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.mark.slow  # a real MiniLM export; tests/training/test_text_parity checks torch MiniLM against the ONNX one
def test_export_reproduces_the_shipped_encoder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "te"
    assert main(["text-encoder", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["encoder.json", "text_encoder.onnx", "tokenizer.json"]
    assert "min_token_cosine" in capsys.readouterr().out
    fresh, shipped = TextEncoder(out), TextEncoder()
    (a, mask_a), (b, mask_b) = fresh.encode(PROMPTS), shipped.encode(PROMPTS)
    np.testing.assert_array_equal(mask_a, mask_b)
    assert np.abs(a - b).max() < 1e-5  # the same weights, stored the same way
    # --force replaces an encoder folder (and only after the new one is complete)
    assert main(["text-encoder", "--out", str(out), "--force"]) == 0
    assert not list(tmp_path.glob(".te.*"))


def test_existing_target_without_force_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "te"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["text-encoder", "--out", str(out)]) == 2
    assert "--force" in _one_error_line(capsys)
    assert main(["text-encoder", "--out", str(out), "--force"]) == 2
    assert "not a text encoder folder" in _one_error_line(capsys)
    assert (out / "keep.txt").read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["te"]


def test_bad_flags_exit_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["text-encoder"]) == 2
    assert "--out" in _one_error_line(capsys)
    assert main(["text-encoder", "--out", str(tmp_path / "x"), "--precision", "int4"]) == 2
    _one_error_line(capsys)
    assert main(["text-encoder", "--out", str(tmp_path / "x"), "--max-tokens", "1"]) == 2
    _one_error_line(capsys)
    afile = tmp_path / "file"
    afile.write_text("")
    assert main(["text-encoder", "--out", str(afile)]) == 2
    assert "not a folder" in _one_error_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
