"""`python -m exporter diffusers`: tiny random diffusers pipelines saved with save_pretrained, imported,
checked against diffusers itself (UNet outputs at the mapped timestep, the scheduler's ᾱ), and refused
in one sentence (exit 2, nothing written) where the app could not run them as diffusers would."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

diffusers = pytest.importorskip("diffusers")

SIZE = 16


def _unet(channels: int = 3, **kwargs):
    import torch

    torch.manual_seed(0)
    args = dict(sample_size=SIZE, in_channels=channels, out_channels=channels, layers_per_block=1,
                block_out_channels=(8, 16), down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=4, attention_head_dim=4)
    args.update(kwargs)
    return diffusers.UNet2DModel(**args)


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    """Saved pipelines: RGB DDPM (safetensors), grey DDIM (.bin), class-conditional learned-range; a bare UNet."""
    root = tmp_path_factory.mktemp("diffusers")
    folders = {name: root / name for name in ("ddpm", "gray", "cls", "bare")}
    diffusers.DDPMPipeline(unet=_unet(), scheduler=diffusers.DDPMScheduler(num_train_timesteps=100)) \
        .save_pretrained(folders["ddpm"])
    gray = diffusers.DDIMScheduler(num_train_timesteps=40, beta_schedule="scaled_linear", beta_start=0.00085,
                                   beta_end=0.012, prediction_type="sample", clip_sample=False)
    diffusers.DDIMPipeline(unet=_unet(channels=1), scheduler=gray).save_pretrained(
        folders["gray"], safe_serialization=False)
    cls = diffusers.DDPMScheduler(num_train_timesteps=50, beta_schedule="squaredcos_cap_v2",
                                  variance_type="learned_range", prediction_type="v_prediction")
    diffusers.DDPMPipeline(unet=_unet(num_class_embeds=5, out_channels=6), scheduler=cls) \
        .save_pretrained(folders["cls"])
    _unet().save_pretrained(folders["bare"])
    return folders


@pytest.fixture(scope="module")
def bundles(sources, tmp_path_factory, run_cli) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("imported")
    made = {}
    for name, extra in (("ddpm", []), ("gray", ["--name", "grey ddim"]), ("cls", ["--fp16"])):
        result = run_cli("diffusers", sources[name], "--out", out / name, *extra)
        assert result.rc == 0, result.err
        assert f"wrote {out / name}" in result.out
        made[name] = out / name
    return made


def _diffusers_unet(folder: Path):
    return diffusers.UNet2DModel.from_pretrained(folder / "unet", low_cpu_mem_usage=False).eval()


def _x(channels: int, n: int) -> np.ndarray:
    return np.random.default_rng(7).standard_normal((n, channels, SIZE, SIZE)).astype(np.float32)


# --- imports that work -----------------------------------------------------------------------


def test_parity_report_is_within_the_bound(bundles):
    for folder in bundles.values():
        report = json.loads((folder / "validation.json").read_text())
        assert report["passed"] and report["bound_max_abs"] == 1e-4
        gated = [e for e in report["network"] if e["gated"]]
        assert gated and all(e["max_abs"] <= 1e-4 for e in gated)
        cases = {(c["t"], c["batch"]) for c in gated[0]["cases"]}
        T = json.loads((folder / "model.json").read_text())["diffusion"]["T"]
        assert cases == {(t, n) for t in (1, round(T / 2), T) for n in (1, 3)}


def test_unconditional_bundle_matches_diffusers_at_t_minus_1(bundles, sources):
    import torch

    from diffusion_studio.inference.bundle_loader import load_bundle

    bundle = load_bundle(bundles["ddpm"], device="cpu")
    assert (bundle.conditioning_kind, bundle.num_classes, bundle.text_encoder) == ("none", None, None)
    assert (bundle.prediction, bundle.variance, bundle.channels, bundle.T) == ("epsilon", "fixed_small", 3, 100)
    x, t = _x(3, 3), np.array([1, 50, 100])
    got = bundle.denoiser(x, t)
    unet = _diffusers_unet(sources["ddpm"])
    with torch.no_grad():
        ref = unet(torch.from_numpy(x), torch.from_numpy(t - 1)).sample.numpy()  # paper t = diffusers t + 1
        off_by_one = unet(torch.from_numpy(x), torch.from_numpy(t)).sample.numpy()
    assert got.shape == (3, 3, SIZE, SIZE) and got.dtype == np.float32
    assert np.abs(got - ref).max() <= 1e-4
    assert np.abs(got - off_by_one).max() > 1e-3  # the mapping matters at this size
    scheduler = diffusers.DDPMScheduler.from_pretrained(sources["ddpm"] / "scheduler")
    np.testing.assert_allclose(bundle.schedule.alphas_cumprod, scheduler.alphas_cumprod.numpy(),
                               rtol=1e-5, atol=1e-8)  # diffusers computes ᾱ in float32
    spec = json.loads((bundles["ddpm"] / "model.json").read_text())
    assert spec["format_version"] == 2 and spec["conditioning"] == {"kind": "none"}
    assert spec["diffusion"] == {"T": 100, "schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02,
                                 "prediction": "epsilon", "variance": "fixed_small", "clip_sample": True,
                                 "clip_sample_range": 1.0}
    pr = spec["provenance"]
    assert (pr["source"], pr["pipeline"], pr["scheduler"]) == ("ddpm", "DDPMPipeline", "DDPMScheduler")
    assert pr["versions"]["diffusers"] == diffusers.__version__ and "/" not in pr["source"]


def test_class_conditional_learned_range_bundle(bundles, sources):
    import torch

    from diffusion_studio.inference.bundle_loader import load_bundle

    bundle = load_bundle(bundles["cls"], device="cpu")
    assert (bundle.conditioning_kind, bundle.num_classes, bundle.class_names) == ("class", 5, None)
    assert (bundle.prediction, bundle.variance) == ("v_prediction", "learned_range")
    assert bundle.spec.unet.fp16_file == "unet.fp16.onnx"
    x, t, labels = _x(3, 2), np.array([1, 50]), np.array([0, 4])
    got = bundle.denoiser(x, t, class_labels=labels)
    unet = _diffusers_unet(sources["cls"])
    with torch.no_grad():
        ref = unet(torch.from_numpy(x), torch.from_numpy(t - 1), class_labels=torch.from_numpy(labels)).sample
    assert got.shape == (2, 6, SIZE, SIZE)  # 2C: the prediction, then the variance interpolation
    assert np.abs(got - ref.numpy()).max() <= 1e-4
    other = bundle.denoiser(x, t, class_labels=np.array([1, 2]))
    assert np.abs(other - got).max() > 1e-4  # the label reaches the network
    with pytest.raises(ValueError, match="class_labels"):
        bundle.denoiser(x, t)
    scheduler = diffusers.DDPMScheduler.from_pretrained(sources["cls"] / "scheduler")
    np.testing.assert_allclose(bundle.schedule.alphas_cumprod, scheduler.alphas_cumprod.numpy(),
                               rtol=1e-5, atol=1e-8)  # diffusers computes ᾱ in float32


def test_grey_ddim_from_bin_weights(bundles, sources):
    import torch

    from diffusion_studio.inference.bundle_loader import load_bundle

    assert (sources["gray"] / "unet" / "diffusion_pytorch_model.bin").is_file()
    bundle = load_bundle(bundles["gray"], device="cpu")
    spec = bundle.spec
    assert (spec.name, spec.channels, spec.T, spec.schedule) == ("grey ddim", 1, 40, "scaled_linear")
    assert (spec.diffusion.prediction, spec.diffusion.clip_sample) == ("sample", False)
    assert spec.diffusion.variance == "fixed_small"  # DDIM has no variance_type: DDPMScheduler's default
    scheduler = diffusers.DDIMScheduler.from_pretrained(sources["gray"] / "scheduler")
    np.testing.assert_allclose(bundle.schedule.alphas_cumprod, scheduler.alphas_cumprod.numpy(),
                               rtol=1e-5, atol=1e-8)  # diffusers computes ᾱ in float32
    x = _x(1, 1)
    with torch.no_grad():
        ref = _diffusers_unet(sources["gray"])(torch.from_numpy(x), torch.tensor([19])).sample.numpy()
    assert np.abs(bundle.denoiser(x, np.array([20])) - ref).max() <= 1e-4
    assert json.loads((bundles["gray"] / "model.json").read_text())["provenance"]["source_weights"] == \
        "unet/diffusion_pytorch_model.bin"


def test_inspect_shows_kind_prediction_variance_and_schedule(bundles, run_cli):
    text = run_cli("inspect", bundles["cls"])
    assert text.rc == 0, text.err
    assert "condition  class, 5 classes (unnamed: 0 … 4)" in text.out
    assert "diffusion  T=50, cosine schedule, predicts v_prediction, variance learned_range, x̂_0 clipped to ±1" \
        in text.out
    assert "imported   from diffusers DDPMPipeline 'cls', scheduler DDPMScheduler" in text.out
    assert "  input  class_labels  int64    [N]" in text.out
    assert "  output model_output  float    [N, 6, 16, 16]" in text.out
    grey = run_cli("inspect", bundles["gray"])
    assert "T=40, scaled_linear schedule (β 0.00085 → 0.012), predicts sample, variance fixed_small, " \
           "x̂_0 not clipped" in grey.out
    assert "condition  none (unconditional: no prompt, no class)" in grey.out
    facts = json.loads(run_cli("inspect", bundles["ddpm"], "--json").out)
    assert facts["model"]["conditioning"] == {"kind": "none"} and facts["loads_in_app"].startswith("yes")


def test_bare_unet_folder_uses_ddpm_defaults_with_a_note(sources):
    from exporter.diffusers_source import load_diffusers_source

    src = load_diffusers_source(sources["bare"])
    assert (src.pipeline, src.scheduler, src.kind, src.T) == (None, None, "none", 1000)
    assert src.diffusion == {"T": 1000, "schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02,
                             "prediction": "epsilon", "variance": "fixed_small", "clip_sample": True,
                             "clip_sample_range": 1.0}
    assert any("no scheduler config" in note for note in src.notes)


def test_existing_output_needs_force(bundles, sources, run_cli):
    result = run_cli("diffusers", sources["ddpm"], "--out", bundles["ddpm"])
    assert result.rc == 2 and "already exists; pass --force" in result.err


# --- refusals: one line, exit 2, nothing written -------------------------------------------


def _edit(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    for key, value in changes.items():
        if value is _DROP:
            data.pop(key, None)
        else:
            data[key] = value
    path.write_text(json.dumps(data))


_DROP = object()
_SCHED = "scheduler/scheduler_config.json"
_UNET = "unet/config.json"


class _Touch:
    """A pickle whose loading would create a file (torch.load(weights_only=True) must refuse it)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _malicious_bin(folder: Path) -> None:
    unet = folder / "unet"
    (unet / "diffusion_pytorch_model.safetensors").unlink()
    with open(unet / "diffusion_pytorch_model.bin", "wb") as f:
        pickle.dump({"conv_in.weight": _Touch(folder.parent / "pwned")}, f)


REFUSALS = {
    "trained betas": (lambda f: _edit(f / _SCHED, trained_betas=[0.1] * 100), "trained_betas"),
    "sigmoid": (lambda f: _edit(f / _SCHED, beta_schedule="sigmoid"), "beta_schedule is 'sigmoid'"),
    "learned variance": (lambda f: _edit(f / _SCHED, variance_type="learned"), "variance_type is 'learned'"),
    "thresholding": (lambda f: _edit(f / _SCHED, thresholding=True), "thresholding"),
    "zero snr": (lambda f: _edit(f / _SCHED, rescale_betas_zero_snr=True), "rescale_betas_zero_snr"),
    "prediction": (lambda f: _edit(f / _SCHED, prediction_type="x0"), "prediction_type is 'x0'"),
    "scheduler class": (lambda f: _edit(f / _SCHED, _class_name="EulerDiscreteScheduler"), "_class_name"),
    "condition model": (lambda f: _edit(f / _UNET, _class_name="UNet2DConditionModel"), "UNet2DConditionModel"),
    "not square": (lambda f: _edit(f / _UNET, sample_size=[16, 8]), "only square images"),
    "fourier": (lambda f: _edit(f / _UNET, time_embedding_type="fourier"), "time_embedding_type"),
    "class embed type": (lambda f: _edit(f / _UNET, class_embed_type="timestep", num_class_embeds=4),
                         "class_embed_type"),
    "out channels": (lambda f: _edit(f / _UNET, out_channels=6), "out_channels is 6"),
    "pipeline": (lambda f: _edit(f / "model_index.json", _class_name="StableDiffusionPipeline"),
                 "StableDiffusionPipeline"),
    "weights shape": (lambda f: _edit(f / _UNET, block_out_channels=[8, 32]), "do not match"),
    "no weights": (lambda f: (f / "unet" / "diffusion_pytorch_model.safetensors").unlink(),
                   "has no diffusion_pytorch_model.safetensors"),
    "not a pipeline": (lambda f: (f / "model_index.json").unlink(), "neither a diffusers pipeline folder"),
    "bad json": (lambda f: (f / _SCHED).write_text("{"), "scheduler config"),
    "malicious pickle": (_malicious_bin, "weights_only=True"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_unsupported_source_is_refused_in_one_line(case, sources, tmp_path, run_cli):
    breaker, words = REFUSALS[case]
    folder = tmp_path / "src"
    shutil.copytree(sources["ddpm"], folder)
    breaker(folder)
    out = tmp_path / "out"
    result = run_cli("diffusers", folder, "--out", out)
    assert result.rc == 2, result.err
    assert result.err.startswith("error: ") and result.err.count("\n") == 1 and words in result.err
    assert not out.exists() and not (tmp_path / "pwned").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]  # no temp folder left either


def test_bad_options_are_refused(sources, tmp_path, run_cli):
    for argv, words in ((["--opset", "5"], "Opset 5 is not supported"), (["--name", "a/b"], "The name 'a/b'"),
                        ([], "The following arguments are required: --out")):
        args = ["diffusers", sources["ddpm"], *argv]
        if argv:
            args += ["--out", tmp_path / "out"]
        result = run_cli(*args)
        assert result.rc == 2 and words in result.err and result.err.count("\n") == 1
    assert not (tmp_path / "out").exists()


# --- parity failures ---------------------------------------------------------------------------


def test_parity_report_catches_a_graph_that_differs(bundles, sources):
    import torch

    from exporter.diffusers_import import validate_import, wrap
    from exporter.diffusers_source import load_diffusers_source

    src = load_diffusers_source(sources["ddpm"])
    with torch.no_grad():
        src.unet.conv_out.bias += 1e-3  # the torch reference now differs from unet.onnx by 1e-3
    report = validate_import(wrap(src.unet, False), bundles["ddpm"], src, None)
    assert not report["passed"]
    worst = report["network"][0]["max_abs"]
    assert 0.9e-3 <= worst <= 1.1e-3
    assert report["failures"] == [f"CPUExecutionProvider max |Δ| {worst:.3g} > 0.0001"]


def test_failed_parity_exits_1_and_writes_nothing(sources, tmp_path, run_cli, monkeypatch):
    import functools

    import exporter.diffusers_import as di

    monkeypatch.setattr(di, "validate_import", functools.partial(di.validate_import, bound=0.0))
    result = run_cli("diffusers", sources["ddpm"], "--out", tmp_path / "out")
    assert result.rc == 1
    assert result.err.startswith("error: parity check failed, the bundle was not written: CPUExecutionProvider max")
    assert list(tmp_path.iterdir()) == []
