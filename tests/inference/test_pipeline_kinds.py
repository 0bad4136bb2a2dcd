"""The pipeline with imported diffusers models: unconditional and class-conditional bundles, v-prediction
and a learned variance, against diffusers' own DDIMPipeline / DDPMPipeline (same timesteps, same noise)."""

from __future__ import annotations

import numpy as np
import pytest

from diffusion_studio.core.sampler_steps import make_timesteps
from diffusion_studio.core.sampling_loop import run_to_end
from diffusion_studio.errors import UsageError
from diffusion_studio.inference.bundle_loader import load_bundle
from diffusion_studio.inference.pipeline import CLASS_NOTE, UNCONDITIONAL_NOTE, GenerationRequest, Pipeline

diffusers = pytest.importorskip("diffusers")
torch = pytest.importorskip("torch")

TOL = 1e-4


@pytest.fixture(scope="module")
def pipelines(diffusers_models):
    return {name: Pipeline(load_bundle(diffusers_models.bundle(name), device="cpu")) for name in ("rgb", "gray", "cls")}


class Draws:
    """The float32 standard normals our sampling loop draws from default_rng(seed), in the same order."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def __call__(self, shape, **_kwargs):
        return torch.from_numpy(self.rng.standard_normal(tuple(shape), dtype=np.float32))


def ours_x0(pipeline: Pipeline, **kwargs) -> np.ndarray:
    """Our final sample x_0 (float, [1, C, H, W]) as diffusers' pipelines return it: (x/2 + 0.5) in [0, 1], NHWC."""
    run = pipeline.iterate(GenerationRequest(**kwargs))
    x0 = run_to_end(run.steps).x_prev
    return np.clip(x0 / 2 + 0.5, 0, 1).transpose(0, 2, 3, 1)


def test_bundles_declare_their_kinds(pipelines):
    kinds = {n: (p.bundle.conditioning_kind.value, p.bundle.prediction.value, p.bundle.variance.value,
                 p.bundle.channels, p.bundle.image_size) for n, p in pipelines.items()}
    assert kinds == {"rgb": ("none", "epsilon", "fixed_small", 3, 32),
                     "gray": ("none", "v_prediction", "fixed_small", 1, 16),
                     "cls": ("class", "epsilon", "learned_range", 3, 16)}
    assert pipelines["cls"].bundle.class_names == ("cat", "dog", "ship", "frog")


def test_ddim_unconditional_v_prediction_equals_diffusers_ddim_pipeline(pipelines, diffusers_models, monkeypatch):
    from diffusers.pipelines.ddim import pipeline_ddim

    pipe = diffusers.DDIMPipeline.from_pretrained(diffusers_models.source("gray"))
    # 50 steps of T = 50: diffusers' "leading" timesteps 49 … 0 are our t = 50 … 1 (its t is ours − 1)
    assert list(make_timesteps(50, 50) - 1) == list(range(49, -1, -1))
    monkeypatch.setattr(pipeline_ddim, "randn_tensor", Draws(123))
    with torch.no_grad():
        theirs = pipe(batch_size=1, num_inference_steps=50, eta=0.0, use_clipped_model_output=True,
                      output_type="np").images
    mine = ours_x0(pipelines["gray"], sampler="ddim", steps=50, seed=123)
    assert mine.shape == theirs.shape == (1, 16, 16, 1)
    assert np.abs(mine - theirs).max() <= TOL
    assert mine.std() > 0.05  # an image, not a constant


def test_ddpm_unconditional_fixed_small_equals_diffusers_ddpm_pipeline(pipelines, diffusers_models, monkeypatch):
    from diffusers.pipelines.ddpm import pipeline_ddpm
    from diffusers.schedulers import scheduling_ddpm

    pipe = diffusers.DDPMPipeline.from_pretrained(diffusers_models.source("rgb"))
    ours_t = make_timesteps(100, 25)  # our spacing, given to its scheduler as custom timesteps (t − 1)
    scheduler = pipe.scheduler
    custom = [int(t) - 1 for t in ours_t]
    monkeypatch.setattr(scheduler, "set_timesteps",
                        lambda *_a, **_k: type(scheduler).set_timesteps(scheduler, timesteps=custom))
    draws = Draws(9)  # x_T, then each step's z: one stream on both sides
    monkeypatch.setattr(pipeline_ddpm, "randn_tensor", draws)
    monkeypatch.setattr(scheduling_ddpm, "randn_tensor", draws)
    with torch.no_grad():
        theirs = pipe(batch_size=1, num_inference_steps=25, output_type="np").images
    # ddpm_variance not given: the bundle's fixed_small is β̃ (diffusers' variance_type)
    mine = ours_x0(pipelines["rgb"], sampler="ddpm", steps=25, seed=9)
    assert mine.shape == theirs.shape == (1, 32, 32, 3)
    assert np.abs(mine - theirs).max() <= TOL
    # and σ_t² = β (the user's choice) is another image
    other = ours_x0(pipelines["rgb"], sampler="ddpm", steps=25, seed=9, ddpm_variance="beta")
    assert np.abs(other - theirs).max() > 1e-2


def test_ddpm_class_conditional_learned_range_equals_diffusers(pipelines, diffusers_models, monkeypatch):
    """DDPMPipeline takes no class labels: its loop (UNet, then DDPMScheduler.step) with class_labels."""
    from diffusers.schedulers import scheduling_ddpm

    source = diffusers_models.source("cls")
    unet = diffusers.UNet2DModel.from_pretrained(source / "unet").eval()
    scheduler = diffusers.DDPMScheduler.from_pretrained(source / "scheduler")
    scheduler.set_timesteps(timesteps=[int(t) - 1 for t in make_timesteps(60, 20)])
    draws = Draws(4)
    monkeypatch.setattr(scheduling_ddpm, "randn_tensor", draws)
    x = draws((1, 3, 16, 16))
    with torch.no_grad():
        for t in scheduler.timesteps:
            out = unet(x, t, class_labels=torch.tensor([2])).sample
            x = scheduler.step(out, t, x).prev_sample
    theirs = (x / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    mine = ours_x0(pipelines["cls"], sampler="ddpm", steps=20, seed=4, class_label="ship")
    assert np.abs(mine - theirs).max() <= TOL
    by_index = ours_x0(pipelines["cls"], sampler="ddpm", steps=20, seed=4, class_label=2)
    np.testing.assert_array_equal(mine, by_index)
    other_class = ours_x0(pipelines["cls"], sampler="ddpm", steps=20, seed=4, class_label=0)
    assert np.abs(other_class - mine).max() > 1e-3


def test_unconditional_needs_no_prompt_and_notes_what_it_ignores_once(pipelines):
    p = pipelines["rgb"]
    plain = p.generate(GenerationRequest(seed=3, steps=4))
    assert plain.notes == [] and plain.images.shape == (1, 32, 32, 3)
    given = p.generate(GenerationRequest("a cat", negative_prompt="blurry", guidance=7.5, seed=3, steps=4))
    assert given.notes == [UNCONDITIONAL_NOTE]
    np.testing.assert_array_equal(given.images, plain.images)
    meta = given.metadata[0]
    assert (meta["prompt"], meta["negative_prompt"], meta["guidance"], meta["conditioning"]) == ("", "", 1.0, "none")
    assert "class_label" not in meta
    with pytest.raises(UsageError, match=r"^The model rgb is not class-conditional, so it takes no class label\.$"):
        p.iterate(GenerationRequest(class_label=1))


def test_class_label_by_index_or_name_and_its_metadata(pipelines):
    p = pipelines["cls"]
    result = p.generate(GenerationRequest(class_label="Dog", seed=5, steps=3, batch=2))
    assert result.notes == [] and result.request.class_label == 1
    assert [(m["class_label"], m["class_name"], m["seed"], m["conditioning"]) for m in result.metadata] == [
        (1, "dog", 5, "class"), (1, "dog", 6, "class")]
    assert p.generate(GenerationRequest(prompt="x", guidance=3, class_label=1, seed=5, steps=3)).notes == [CLASS_NOTE]
    from diffusion_studio.core.png_meta import encode_png, format_parameters, read_metadata

    assert "Class: 1, Class name: dog" in format_parameters(result.metadata[0])
    back = read_metadata(encode_png(result.images[0], result.metadata[0]))
    assert (back["class_label"], back["class_name"]) == (1, "dog")


@pytest.mark.parametrize(("label", "message"), [
    (None, "The model cls is class-conditional: choose a class, 0..3 or a name (cat, dog, ship, frog)."),
    (4, "The class 4 is out of range for the model cls; choose 0..3 or a name (cat, dog, ship, frog)."),
    ("horse", "The model cls has no class 'horse'; choose 0..3 or a name (cat, dog, ship, frog)."),
    (1.5, "A class label must be a number or a class name, got 1.5."),
])
def test_bad_class_labels_are_one_sentence(pipelines, label, message):
    with pytest.raises(UsageError) as info:
        pipelines["cls"].iterate(GenerationRequest(class_label=label))
    assert str(info.value) == message


def test_ddpm_variance_defaults_follow_the_bundle(pipelines):
    rgb, cls = pipelines["rgb"], pipelines["cls"]
    assert rgb.resolve(GenerationRequest()).ddpm_variance == "beta-tilde"  # fixed_small
    assert rgb.resolve(GenerationRequest(ddpm_variance="beta")).ddpm_variance == "beta"
    assert cls.resolve(GenerationRequest(class_label=0)).ddpm_variance is None  # learned
    note = cls.iterate(GenerationRequest(class_label=0, sampler="ddpm", ddpm_variance="beta")).notes
    assert note == ["this model learns its variance (learned_range), so the DDPM variance is not used."]
    # clip_sample comes from the bundle (gray: off), the user's choice wins
    assert pipelines["gray"].resolve(GenerationRequest()).clip_x0 is False
    assert pipelines["gray"].resolve(GenerationRequest(clip_x0=True)).clip_x0 is True
    meta = rgb.generate(GenerationRequest(sampler="ddpm", steps=2, seed=1)).metadata[0]
    assert meta["ddpm_variance"] == "beta-tilde"
