"""Latent diffusion on ONNX Runtime (issue 16): an Optimum-layout folder opens directly and samples as
diffusers' StableDiffusionPipeline does, given the same x_T and a matching DDIM configuration.

The tiny pipeline's scheduler is SD's (scaled_linear, "leading" spacing, steps_offset 1), so our run
visits diffusers' timesteps + 1 (10 steps: 902, 802, …, 2). The one difference in configuration:
set_alpha_to_one=True, because our last step goes to ᾱ_0 = 1 (SD's ends at ᾱ of diffusers' t = 0).
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from diffusion_studio.core.latent_preview import area_downsample
from diffusion_studio.core.sampler_steps import make_timesteps
from diffusion_studio.errors import BundleError, UsageError
from diffusion_studio.inference.latent import (
    LatentModel,
    LatentPipeline,
    LatentStep,
    latent_timesteps,
    load_latent,
    open_model,
)
from diffusion_studio.inference.pipeline import GenerationRequest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1]))
from latent_models import build_tiny_sd_pipeline  # noqa: E402
from latent_optimum import write_optimum_folder  # noqa: E402

STEPS = 10
PROMPT = "a photo of a red cat"


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("latent")
    sd = build_tiny_sd_pipeline(tmp)
    return sd, write_optimum_folder(sd, tmp / "optimum")


@pytest.fixture(scope="module")
def model(folders: tuple[Path, Path]) -> LatentModel:
    return load_latent(folders[1], "cpu")


def test_optimum_folder_facts(model: LatentModel) -> None:
    assert (model.source, model.latent_channels, model.factor, model.image_size) == ("optimum", 4, 2, 16)
    assert model.scaling_factor == pytest.approx(0.18215)
    assert model.steps_offset == 1 and model.t_offset == -1 and model.T == 1000
    assert model.max_tokens == 77 and model.default_sampler == "ddim"
    ids, notes = model.tokenizer(["a red cat", "x " * 100])
    assert ids.shape == (2, 77) and notes == ["the prompt was truncated to 77 tokens (CLIP's limit)."]


def _matching_ddim(config: Any) -> Any:
    from diffusers import DDIMScheduler

    return DDIMScheduler.from_config(config, set_alpha_to_one=True)  # η = 0, no clipping, as configured


def test_timesteps_follow_steps_offset() -> None:
    assert list(latent_timesteps(1000, 10, 1.0, 1)) == list(range(902, 1, -100))
    assert list(latent_timesteps(1000, 10, 0.3, 1)) == [202, 102, 2]  # img2img: diffusers' tail
    assert list(latent_timesteps(1000, 10, 1.0, 0)) == list(make_timesteps(1000, 10))  # ours: 1000, 889, …, 1
    assert list(latent_timesteps(1000, 1, 1.0, 1)) == [1000]  # the grid would start at t = 2 from pure noise
    assert latent_timesteps(1000, 600, 1.0, 1)[0] == 1000


@pytest.mark.parametrize("negative", ["", "blue sky"])
def test_ddim_matches_diffusers(folders: tuple[Path, Path], model: LatentModel, negative: str) -> None:
    import torch
    from diffusers import StableDiffusionPipeline

    pipe: Any = StableDiffusionPipeline.from_pretrained(str(folders[0]), safety_checker=None, feature_extractor=None,
                                                        requires_safety_checker=False)
    pipe.scheduler = _matching_ddim(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    x_T = np.random.default_rng(7).standard_normal((1, 4, 8, 8), dtype=np.float32)  # our seed 7's draw
    with torch.no_grad():
        theirs = pipe(PROMPT, negative_prompt=negative or None, num_inference_steps=STEPS, guidance_scale=7.5, eta=0.0,
                      latents=torch.from_numpy(x_T), output_type="np").images[0]
    run = LatentPipeline(model).iterate(GenerationRequest(prompt=PROMPT, negative_prompt=negative, sampler="ddim",
                                                          steps=STEPS, guidance=7.5, seed=7))
    steps = list(run.steps)
    pipe.scheduler.set_timesteps(STEPS)
    assert [s.t for s in steps] == [int(t) + 1 for t in pipe.scheduler.timesteps]
    ours = (steps[-1].x_prev[0].transpose(1, 2, 0) + 1.0) / 2.0
    assert ours.shape == theirs.shape == (16, 16, 3)
    assert np.abs(ours - theirs).max() < 1e-3
    assert np.abs(theirs - 0.5).max() > 0.05  # a real image, not a constant


def test_seed_reproduces_prompt_changes_and_every_sampler_runs(model: LatentModel) -> None:
    pipeline = LatentPipeline(model)
    images = {}
    for sampler in ("ddim", "ddpm", "dpmpp-2m"):
        a = pipeline.generate(GenerationRequest(prompt=PROMPT, sampler=sampler, steps=6, seed=3)).images
        b = pipeline.generate(GenerationRequest(prompt=PROMPT, sampler=sampler, steps=6, seed=3)).images
        assert a.shape == (1, 16, 16, 3) and np.array_equal(a, b)
        images[sampler] = a
    other = pipeline.generate(GenerationRequest(prompt="a green tree at night", sampler="ddim", steps=6, seed=3))
    assert np.abs(other.images.astype(int) - images["ddim"].astype(int)).max() > 0
    assert not np.array_equal(images["ddim"], images["ddpm"])
    seed4 = pipeline.generate(GenerationRequest(prompt=PROMPT, sampler="ddim", steps=6, seed=4)).images
    assert not np.array_equal(seed4, images["ddim"])


def test_any_size_multiple_of_factor(model: LatentModel) -> None:
    pipeline = LatentPipeline(model)
    result = pipeline.generate(GenerationRequest(prompt=PROMPT, steps=3, seed=1, width=24, height=12, batch=2))
    assert result.images.shape == (2, 12, 24, 3)
    assert (result.metadata[1]["width"], result.metadata[1]["height"], result.metadata[1]["seed"]) == (24, 12, 2)
    with pytest.raises(UsageError, match=r"^The width must be a multiple of 2 .*got 15\.$"):
        pipeline.generate(GenerationRequest(prompt=PROMPT, steps=3, width=15))


def test_previews_every_step_are_linear_and_cheap(model: LatentModel) -> None:
    pipeline = LatentPipeline(model)
    run = pipeline.iterate(GenerationRequest(prompt=PROMPT, steps=5, seed=2, sampler="ddim", preview=False))
    steps = list(run.steps)
    assert all(isinstance(s, LatentStep) and s.x0_pred.shape == (1, 3, 16, 16) for s in steps)
    assert [s.decoded for s in steps] == [False] * 4 + [True]  # no preview wanted: no full decodes
    m, b = model.preview_map()
    step = steps[2]
    assert step.latent_x0_pred is not None
    expected = np.clip(np.einsum("rc,nchw->nrhw", m, step.latent_x0_pred / model.scaling_factor)
                       + b[:, None, None], -1, 1)
    assert np.allclose(step.x0_pred[:, :, ::2, ::2], expected, atol=1e-5)
    # the map is a least-squares fit: on fresh latents it explains the pooled decode better than its mean
    z = np.random.default_rng(11).standard_normal((2, 4, 8, 8), dtype=np.float32)
    target = area_downsample(model.decode(z), 2)
    approx = model.preview(z)[:, :, ::2, ::2]
    assert ((approx - target) ** 2).mean() < ((target - target.mean(axis=(0, 2, 3), keepdims=True)) ** 2).mean()
    # the final step is the full decode; an intermediate one decodes in full on demand
    assert np.allclose(steps[-1].x_prev, model.decode(steps[-1].latent_x_prev), atol=1e-6)
    assert pipeline.decode(step).shape == (1, 3, 16, 16)
    start = time.perf_counter()
    for _ in range(20):
        model.preview(step.latent_x0_pred)
    preview_s = (time.perf_counter() - start) / 20
    start = time.perf_counter()
    model.decode(step.latent_x0_pred)
    assert preview_s < time.perf_counter() - start


def test_full_decodes_within_their_share_of_the_run(model: LatentModel, monkeypatch: pytest.MonkeyPatch) -> None:
    from diffusion_studio.inference import latent

    pipeline = LatentPipeline(model)
    request = GenerationRequest(prompt=PROMPT, steps=6, seed=2, sampler="ddim")
    monkeypatch.setattr(latent, "FULL_DECODE_SHARE", 1e9)  # any cost fits: every step decoded in full
    steps = list(pipeline.iterate(request).steps)
    assert all(s.decoded for s in steps)
    assert steps[1].latent_x0_pred is not None
    np.testing.assert_allclose(steps[1].x0_pred, model.decode(steps[1].latent_x0_pred), atol=1e-6)
    monkeypatch.setattr(latent, "FULL_DECODE_SHARE", 0.0)  # no time for decodes: only the first (cost unknown)
    steps = list(pipeline.iterate(request).steps)
    assert [s.decoded for s in steps] == [True] + [False] * 4 + [True]
    from diffusion_studio.core.images import to_uint8

    assert np.array_equal(to_uint8(steps[-1].x_prev), pipeline.generate(request).images)  # decodes change no pixel


def test_img2img_encodes_with_the_vae_mean(folders: tuple[Path, Path], model: LatentModel) -> None:
    import torch
    from diffusers import AutoencoderKL

    vae: Any = AutoencoderKL.from_pretrained(str(folders[0] / "vae")).eval()
    image = np.random.default_rng(5).uniform(-1, 1, (1, 3, 16, 16)).astype(np.float32)
    with torch.no_grad():
        mean = vae.encode(torch.from_numpy(image)).latent_dist.mean.numpy() * vae.config.scaling_factor
    assert np.abs(model.encode_image(image) - mean).max() < 1e-4
    pipeline = LatentPipeline(model)
    init = ((image[0].transpose(1, 2, 0) + 1) * 127.5).round().astype(np.uint8)
    a = pipeline.generate(GenerationRequest(prompt=PROMPT, steps=10, seed=1, init_image=init, strength=0.3))
    b = pipeline.generate(GenerationRequest(prompt=PROMPT, steps=10, seed=1, init_image=init, strength=0.3))
    t2i = pipeline.generate(GenerationRequest(prompt=PROMPT, steps=10, seed=1))
    assert np.array_equal(a.images, b.images) and not np.array_equal(a.images, t2i.images)
    assert a.metadata[0]["strength"] == 0.3


def test_estimate_seconds_scales_with_steps_and_area(model: LatentModel) -> None:
    pipeline = LatentPipeline(model)
    few = pipeline.estimate_seconds(GenerationRequest(prompt=PROMPT, steps=5, guidance=1.0))
    assert few > 0
    model.flops_per_forward = 1e9  # as model.json would give it: then the estimate is FLOPs / rate
    try:
        a = pipeline.estimate_seconds(GenerationRequest(prompt=PROMPT, steps=5, guidance=1.0))
        b = pipeline.estimate_seconds(GenerationRequest(prompt=PROMPT, steps=10, guidance=7.5, width=32, height=32))
        assert b == pytest.approx(a * 2 * 2 * 4, rel=1e-6)
    finally:
        model.flops_per_forward = None


def _copy(folder: Path, tmp_path: Path) -> Path:
    out = tmp_path / "copy"
    shutil.copytree(folder, out)
    return out


def test_bad_optimum_folders_say_one_sentence(folders: tuple[Path, Path], tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"is a diffusers pipeline with PyTorch weights, not an ONNX export; "
                                          r"convert it with: python -m exporter diffusers .* --out BUNDLE\.$"):
        open_model(folders[0])
    broken = _copy(folders[1], tmp_path)
    (broken / "unet" / "model.onnx").unlink()
    with pytest.raises(BundleError, match=r"^The Optimum folder .* lacks unet/model\.onnx\.$"):
        open_model(broken)
    shutil.rmtree(broken)
    broken = _copy(folders[1], tmp_path)
    (broken / "model_index.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(BundleError, match=r"model_index\.json is not valid JSON"):
        open_model(broken)
    (broken / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    (broken / "vae_decoder" / "model.onnx").write_bytes(b"not onnx")
    with pytest.raises(BundleError, match=r"^The VAE decoder .* is not a valid ONNX model"):
        open_model(broken)
    (broken / "tokenizer" / "merges.txt").unlink()
    shutil.copy(folders[1] / "vae_decoder" / "model.onnx", broken / "vae_decoder" / "model.onnx")
    with pytest.raises(BundleError, match="merges.txt"):
        open_model(broken)
