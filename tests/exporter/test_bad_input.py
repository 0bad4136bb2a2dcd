"""Bad input: exit code 2, one clear line on stderr, and nothing written anywhere."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from diffusion_studio.core.params import GUIDANCE_MAX


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _assert_usage_error(result, *phrases: str) -> None:
    assert result.rc == 2, (result.out, result.err)
    lines = result.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.err
    assert "Traceback" not in result.err
    for phrase in phrases:
        assert phrase in lines[0], lines[0]


@pytest.fixture
def run_copy(tiny_run, tmp_path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(tiny_run, target)
    return target


def _checkpoint(run: Path) -> Path:
    return next((run / "checkpoints").glob("*.safetensors"))


def test_nonexistent_path(run_cli, tmp_path):
    result = run_cli(tmp_path / "no-such-run", "--out", tmp_path / "bundle")
    _assert_usage_error(result, "no-such-run", "does not exist")
    assert list(tmp_path.iterdir()) == []


def test_directory_that_is_not_a_run(run_cli, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "cat.png").write_bytes(b"not a checkpoint")
    result = run_cli(folder, "--out", tmp_path / "bundle")
    _assert_usage_error(result, "photos", "no checkpoint")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos"]


def test_truncated_safetensors(run_cli, run_copy, tmp_path):
    ckpt = _checkpoint(run_copy)
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    for source in (run_copy, ckpt):  # the run folder and the file itself
        result = run_cli(source, "--out", tmp_path / "bundle")
        _assert_usage_error(result, "truncated or damaged")
    assert not (tmp_path / "bundle").exists()


def test_config_that_disagrees_with_the_weights(run_cli, run_copy, tmp_path):
    sidecar = _checkpoint(run_copy).with_suffix(".json")
    data = json.loads(sidecar.read_text())
    data["config"]["unet"]["base_channels"] = 16  # the weights were trained with 8
    sidecar.write_text(json.dumps(data))
    result = run_cli(run_copy, "--out", tmp_path / "bundle")
    _assert_usage_error(result, "do not match its U-Net config", "the config needs")
    assert not (tmp_path / "bundle").exists()


def test_diverged_weights(run_cli, run_copy, tmp_path):
    from safetensors.torch import load_file, save_file

    ckpt = _checkpoint(run_copy)
    tensors = load_file(ckpt)
    tensors["ema.conv_in.weight"][0, 0, 0, 0] = float("nan")
    save_file(tensors, ckpt)
    result = run_cli(run_copy, "--out", tmp_path / "bundle")
    _assert_usage_error(result, "contain NaN or Inf", "conv_in.weight")
    assert not (tmp_path / "bundle").exists()


def test_existing_target_without_force(run_cli, tiny_run, ema_export, tmp_path):
    target = tmp_path / "bundle"
    shutil.copytree(ema_export[0], target)
    before = _snapshot(target)
    result = run_cli(tiny_run, "--out", target)
    _assert_usage_error(result, "already exists", "--force")
    assert _snapshot(target) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_force_never_replaces_a_folder_that_is_not_a_bundle(run_cli, tiny_run, tmp_path):
    target = tmp_path / "thesis"
    target.mkdir()
    (target / "chapter1.tex").write_text("precious")
    result = run_cli(tiny_run, "--out", target, "--force")
    _assert_usage_error(result, "not a model bundle")
    assert (target / "chapter1.tex").read_text() == "precious"


def test_output_inside_the_run_is_refused(run_cli, run_copy):
    before = _snapshot(run_copy)
    result = run_cli(run_copy, "--out", run_copy, "--force")
    _assert_usage_error(result, "would overwrite the checkpoint")
    assert _snapshot(run_copy) == before


@pytest.mark.parametrize(
    ("args", "phrase"),
    [
        (["--opset", "5"], "Opset 5 is not supported"),
        (["--weights", "best"], "invalid choice"),
        (["--sampler", "euler"],
         "Argument --sampler: invalid choice: 'euler' (choose from 'ddpm', 'ddim', 'dpmpp-2m')."),
        (["--steps", "0"], "Steps must be an integer between 1 and 100 (the model's T), got 0."),
        (["--steps", "101"], "Steps must be an integer between 1 and 100 (the model's T), got 101."),
        (["--guidance", "nan"], "Guidance must be a number between 0 and 100, got nan."),
        (["--name", "a/b"], "The name 'a/b'"),
        (["--opset", "eighteen"], "invalid int value"),
        ([], "arguments are required: --out"),
    ],
)
def test_bad_options(run_cli, tiny_run, tmp_path, args, phrase):
    out = ["--out", str(tmp_path / "bundle")] if args else []
    result = run_cli(tiny_run, *out, *args)
    _assert_usage_error(result, phrase)
    assert list(tmp_path.iterdir()) == []


def test_no_arguments(run_cli):
    _assert_usage_error(run_cli(), "usage")


def test_inspect_of_a_folder_that_is_not_a_bundle(run_cli, tiny_run):
    _assert_usage_error(run_cli("inspect", tiny_run), "not a model bundle")


@pytest.mark.parametrize(
    ("field", "value", "phrases"),
    [
        ("base_channels", "16", ["config.unet.base_channels must be an integer, got '16'"]),
        ("channel_mults", "12", ["config.unet.channel_mults must be a list of integers"]),
        ("coord_channels", 1, ["config.unet.coord_channels must be true or false, got 1"]),
        ("dropout", None, ["config.unet.dropout must be a finite number, got None"]),
        ("T", "1000", ["config.T must be an integer, got '1000'"]),
        ("T", 10**100, ["invalid T=", "an integer from 2 to 100000"]),
        ("sample_guidance", "high", ["config.sample_guidance must be a finite number"]),
        ("text_encoder_sha256", 5, ["config.text_encoder_sha256 must be a string or null, got 5"]),
    ],
)
def test_sidecar_field_of_the_wrong_type(run_cli, run_copy, tmp_path, field, value, phrases):
    sidecar = _checkpoint(run_copy).with_suffix(".json")
    data = json.loads(sidecar.read_text())
    (data["config"]["unet"] if field in data["config"]["unet"] else data["config"])[field] = value
    sidecar.write_text(json.dumps(data))
    result = run_cli(run_copy, "--out", tmp_path / "bundle")
    _assert_usage_error(result, *phrases)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_sidecar_nested_too_deeply(run_cli, run_copy, tmp_path):
    sidecar = _checkpoint(run_copy).with_suffix(".json")
    sidecar.write_text("[" * 100_000 + "]" * 100_000)
    result = run_cli(run_copy, "--out", tmp_path / "bundle")
    _assert_usage_error(result, "checkpoint sidecar", "too deeply")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_run_guidance_beyond_the_app_limit_needs_an_explicit_one(run_cli, run_copy, tmp_path):
    sidecar = _checkpoint(run_copy).with_suffix(".json")
    data = json.loads(sidecar.read_text())
    data["config"]["sample_guidance"] = 1e308
    sidecar.write_text(json.dumps(data))
    result = run_cli(run_copy, "--out", tmp_path / "bundle", "--no-validate")
    _assert_usage_error(
        result, f"Guidance must be a number between 0 and {GUIDANCE_MAX:g}, got 1e+308 (the run's guidance)",
        "pass --guidance W")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    _assert_usage_error(run_cli(run_copy, "--out", tmp_path / "bundle", "--guidance", "1e308"),
                        f"Guidance must be a number between 0 and {GUIDANCE_MAX:g}, got 1e+308.")


def _fail_with(monkeypatch, exc: BaseException) -> None:
    import exporter.export

    def export_bundle(*args, **kwargs):
        raise exc

    monkeypatch.setattr(exporter.export, "export_bundle", export_bundle)


def test_internal_error_is_one_line_exit_1(run_cli, monkeypatch, tmp_path):
    monkeypatch.delenv("DIFFUSION_STUDIO_DEBUG", raising=False)
    _fail_with(monkeypatch, RuntimeError("a bug\nspread over   lines"))
    result = run_cli(tmp_path, "--out", tmp_path / "bundle")
    assert result.rc == 1
    assert result.err.splitlines() == [
        ("error: internal error: RuntimeError: a bug spread over lines; the bundle was not written "
         "(run with DIFFUSION_STUDIO_DEBUG=1 for the traceback)")]
    assert "Traceback" not in result.err


def test_internal_error_with_the_debug_variable_raises(run_cli, monkeypatch, tmp_path):
    monkeypatch.setenv("DIFFUSION_STUDIO_DEBUG", "1")
    _fail_with(monkeypatch, ZeroDivisionError("division by zero"))
    with pytest.raises(ZeroDivisionError):  # python -m exporter then prints its traceback
        run_cli(tmp_path, "--out", tmp_path / "bundle")


def test_model_output_error_is_one_line_exit_1(run_cli, monkeypatch, tmp_path):
    from diffusion_studio.errors import ModelOutputError

    monkeypatch.setenv("DIFFUSION_STUDIO_DEBUG", "1")  # not a bug: one line even when debugging
    _fail_with(monkeypatch, ModelOutputError("The U-Net produced NaN at t=5."))
    result = run_cli(tmp_path, "--out", tmp_path / "bundle")
    assert (result.rc, result.err) == (1, "error: The U-Net produced NaN at t=5.\n")


def test_an_interrupted_replace_is_recovered_before_the_force_check(run_cli, tiny_run, tmp_path):
    """A kill between the two renames of a --force swap (systems without the atomic exchange) left
    `--out` missing and the previous bundle in .NAME.old-PID: the next run puts it back first, so
    it is the user's bundle again and is refused without --force."""
    import subprocess
    import sys

    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout)
    old = tmp_path / f".bundle.old-{dead}"
    old.mkdir()
    (old / "model.json").write_text('{"name": "previous"}')
    (tmp_path / f".bundle.tmp-{dead}-abc123").mkdir()  # the half-written new one
    result = run_cli(tiny_run, "--out", tmp_path / "bundle")
    _assert_usage_error(result, "already exists", "--force")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]
    assert (tmp_path / "bundle" / "model.json").read_text() == '{"name": "previous"}'
