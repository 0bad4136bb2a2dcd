"""Pipeline: seeds, batches, guidance wiring vs a torch reference, validation, notes, cancel, metadata."""

from __future__ import annotations

import numpy as np
import pytest

from diffusion_studio.core import png_meta
from diffusion_studio.core.guidance import guided_eps_fn
from diffusion_studio.core.images import to_uint8
from diffusion_studio.core.params import GUIDANCE_MAX
from diffusion_studio.core.sampling_loop import sample
from diffusion_studio.errors import Cancelled, UsageError
from diffusion_studio.inference.bundle_loader import load_bundle
from diffusion_studio.inference.pipeline import GenerationRequest, Pipeline


@pytest.fixture(scope="module")
def pipeline(tiny_bundle) -> Pipeline:
    return Pipeline(load_bundle(tiny_bundle, device="cpu"))


def _gen(pipeline: Pipeline, prompt: str = "a red circle", **kwargs):
    return pipeline.generate(GenerationRequest(prompt, **kwargs))


def test_same_seed_same_image_and_different_seed_different_image(pipeline):
    a = _gen(pipeline, seed=123)
    b = _gen(pipeline, seed=123)
    c = _gen(pipeline, seed=124)
    assert a.images.dtype == np.uint8 and a.images.shape == (1, 8, 8, 3)
    np.testing.assert_array_equal(a.images, b.images)
    assert np.abs(a.images.astype(int) - c.images.astype(int)).mean() > 10


def test_pipeline_matches_a_torch_reference_loop(pipeline, tiny_unet):
    """Text encoding, guidance and the sampler wired as the contract says, with torch as the network."""
    import torch

    def torch_denoiser(x, t, context, mask):
        with torch.no_grad():
            args = (torch.from_numpy(x), torch.from_numpy(t), torch.from_numpy(context), torch.from_numpy(mask))
            return tiny_unet(*args).numpy()

    encoder = pipeline.bundle.text_encoder
    context, mask = encoder.encode(["a green star"])
    negative, negative_mask = encoder.encode(["blurry"])
    eps_fn = guided_eps_fn(torch_denoiser, context, mask, negative, negative_mask, 2.5)
    reference = list(sample(eps_fn, pipeline.bundle.schedule, (1, 3, 8, 8), sampler="dpmpp-2m", steps=6,
                            rng=np.random.default_rng(99)))[-1].x_prev

    seen = []
    result = pipeline.generate(
        GenerationRequest("a green star", negative_prompt="blurry", sampler="dpmpp-2m", steps=6, guidance=2.5,
                          seed=99, batch=1),
        on_step=seen.append,
    )
    assert len(seen) == 6
    np.testing.assert_allclose(seen[-1].x_prev, reference, atol=1e-4)
    assert np.abs(result.images.astype(int) - to_uint8(reference).astype(int)).max() <= 1
    assert np.abs(reference).max() > 0.1  # a real image, not all zeros


def test_batch_image_i_is_seed_plus_i_alone(pipeline):
    batch = _gen(pipeline, seed=40, batch=3, sampler="ddpm", steps=5)
    assert [m["seed"] for m in batch.metadata] == [40, 41, 42]
    assert [m["batch_index"] for m in batch.metadata] == [0, 1, 2]
    for i in range(3):
        alone = _gen(pipeline, seed=40 + i, sampler="ddpm", steps=5)
        assert np.abs(batch.images[i].astype(int) - alone.images[0].astype(int)).max() <= 1
    assert not np.array_equal(batch.images[0], batch.images[1])


def test_random_seed_is_recorded_and_reproduces(pipeline):
    first = _gen(pipeline)
    seed = first.request.seed
    assert isinstance(seed, int) and seed >= 0 and first.metadata[0]["seed"] == seed
    np.testing.assert_array_equal(_gen(pipeline, seed=seed).images, first.images)


def test_defaults_come_from_the_bundle(pipeline):
    result = _gen(pipeline, seed=1)
    assert (result.request.sampler, result.request.steps, result.request.guidance) == ("ddim", 4, 2.0)
    meta = result.metadata[0]
    assert meta["model"] == "tiny" and meta["model_hash"] == pipeline.bundle.model_hash
    assert meta["provider"] == "CPUExecutionProvider" and meta["width"] == meta["height"] == 8
    assert result.steps_per_s == pytest.approx(4 / result.seconds)
    assert result.provider.active == "CPUExecutionProvider"


def test_metadata_round_trips_through_png(pipeline):
    result = _gen(pipeline, "  a ☀ sun, \"quoted\": yes\nsecond line", negative_prompt="dark", seed=5)
    data = png_meta.encode_png(result.images[0], result.metadata[0])
    assert png_meta.read_metadata(data) == result.metadata[0]


def test_negative_prompt_changes_the_image(pipeline):
    plain = _gen(pipeline, seed=8, guidance=4.0)
    negative = _gen(pipeline, seed=8, guidance=4.0, negative_prompt="a blue square")
    assert not np.array_equal(plain.images, negative.images)


def test_unconditional_embedding_is_cached(pipeline):
    first = pipeline.unconditional()
    assert pipeline.unconditional() is first
    assert first[1].sum() == 2.0  # "" is [CLS] [SEP]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"steps": 0}, "Steps must be an integer between 1 and 50"),
        ({"steps": 51}, "Steps must be an integer between 1 and 50"),
        ({"steps": 2.5}, "Steps must be an integer"),
        ({"guidance": -0.5}, f"Guidance must be a number between 0 and {GUIDANCE_MAX:g}, got -0.5."),
        ({"guidance": float("nan")}, "Guidance must be a number between 0 and"),
        ({"guidance": float("inf")}, "Guidance must be a number between 0 and"),
        ({"guidance": 1e308}, f"Guidance must be a number between 0 and {GUIDANCE_MAX:g}, got 1e+308."),
        ({"guidance": GUIDANCE_MAX + 0.5}, "Guidance must be a number between 0 and"),
        ({"batch": 0}, "Batch must be an integer between 1 and 64"),
        ({"batch": 65}, "Batch must be an integer between 1 and 64"),
        ({"sampler": "euler"}, "Unknown sampler 'euler'; choose one of ddpm, ddim, dpmpp-2m"),
        ({"seed": -1}, "The seed must be an integer between 0 and"),
        ({"strength": 0.5}, "A strength below 1 needs an init image"),
        ({"strength": 1.5}, "Strength must lie in (0, 1]"),
    ],
)
def test_bad_requests_raise_one_sentence(pipeline, kwargs, message):
    with pytest.raises(UsageError) as info:
        pipeline.iterate(GenerationRequest("a circle", **{"seed": 1, **kwargs}))
    assert message in str(info.value) and "\n" not in str(info.value)


def test_long_prompt_is_truncated_with_a_note(pipeline):
    result = _gen(pipeline, "a red circle " * 770, seed=2)  # 10,010 characters
    assert len(result.request.prompt) > 10_000
    assert any("longer than 8 tokens" in note for note in result.notes)
    assert result.images.shape == (1, 8, 8, 3)
    again = _gen(pipeline, "a red circle " * 770, seed=2)  # the encoder's cache answers; the note stays
    assert again.notes == result.notes and len(again.notes) == 1
    np.testing.assert_array_equal(again.images, result.images)


def test_guidance_bound_is_inclusive(pipeline):
    request = pipeline.resolve(GenerationRequest("a circle", guidance=GUIDANCE_MAX, seed=1))
    assert request.guidance == GUIDANCE_MAX


def test_undecodable_bytes_in_prompts_become_u_fffd_in_the_request_and_metadata(pipeline):
    result = _gen(pipeline, "a\udcff circle", negative_prompt="\udcfe blue", seed=4, steps=2)
    assert result.request.prompt == "a\ufffd circle" and result.request.negative_prompt == "\ufffd blue"
    assert result.metadata[0]["prompt"] == "a\ufffd circle"
    assert png_meta.read_metadata(png_meta.encode_png(result.images[0], result.metadata[0]))["prompt"] == (
        "a\ufffd circle")
    clean = _gen(pipeline, "a\ufffd circle", negative_prompt="\ufffd blue", seed=4, steps=2)
    np.testing.assert_array_equal(result.images, clean.images)


@pytest.mark.parametrize("prompt", ["🔴 a red circle 🟦🎨", "دائرة حمراء في الزاوية", "שלום עולם 123"])
def test_emoji_and_right_to_left_prompts_work(pipeline, prompt):
    result = _gen(pipeline, prompt, seed=3)
    assert result.metadata[0]["prompt"] == prompt
    context, mask = pipeline.bundle.text_encoder.encode([prompt])
    assert mask.sum() > 2  # real tokens, not just [CLS] [SEP]


def test_iterate_yields_every_step_and_preview_false_reports_only_the_last(pipeline):
    run = pipeline.iterate(GenerationRequest("x", seed=1, steps=5, sampler="ddim"))
    assert (run.request.seed, run.request.steps, run.request.guidance, run.notes) == (1, 5, 2.0, [])
    steps = list(run.steps)
    assert [s.index for s in steps] == [0, 1, 2, 3, 4] and {s.count for s in steps} == {5}
    assert steps[0].x_prev.shape == (1, 3, 8, 8) and steps[0].t > steps[-1].t
    seen = []
    pipeline.generate(GenerationRequest("x", seed=1, steps=5, preview=False), on_step=seen.append)
    assert [s.index for s in seen] == [4]


def test_one_prompt_per_image_equals_each_prompt_alone(pipeline):
    prompts = ("a red circle", "a blue square")
    batch = _gen(pipeline, prompts, seed=20, batch=2, steps=4)
    assert [m["prompt"] for m in batch.metadata] == list(prompts) and batch.request.prompt == prompts
    for i, prompt in enumerate(prompts):
        alone = _gen(pipeline, prompt, seed=20 + i, steps=4)
        assert np.abs(batch.images[i].astype(int) - alone.images[0].astype(int)).max() <= 1
    with pytest.raises(UsageError, match=r"one prompt per image \(3\), got 2 prompts"):
        pipeline.iterate(GenerationRequest(prompts, seed=1, batch=3))


def test_iterate_returns_the_run_and_keeps_nothing_on_the_pipeline(pipeline):
    run = pipeline.iterate(GenerationRequest("a red circle " * 20, seed=None, eta=0.5))
    assert isinstance(run.request.seed, int) and run.request.sampler == "ddim"
    assert run.notes and "longer than 8 tokens" in run.notes[0]
    assert not hasattr(pipeline, "last_request") and not hasattr(pipeline, "notes")


def test_should_stop_and_cancel_raise_cancelled(pipeline):
    calls = []
    with pytest.raises(Cancelled):
        pipeline.generate(GenerationRequest("x", seed=1, steps=6), should_stop=lambda: len(calls) >= 2,
                          on_step=calls.append)
    assert len(calls) == 2
    seen = []

    def cancel_after_first(step):
        seen.append(step)
        pipeline.cancel()

    with pytest.raises(Cancelled):
        pipeline.generate(GenerationRequest("x", seed=1, steps=6), on_step=cancel_after_first)
    assert len(seen) == 1
    assert _gen(pipeline, "x", seed=1).images.shape == (1, 8, 8, 3)  # the next run is not poisoned


def test_img2img_starts_from_the_init_image(pipeline):
    init = np.zeros((8, 8, 3), np.uint8)
    init[:, :, 0] = 255  # pure red
    result = _gen(pipeline, seed=4, steps=10, init_image=init, strength=0.3)
    assert result.metadata[0]["strength"] == 0.3
    assert result.images[0, :, :, 0].mean() > result.images[0, :, :, 2].mean() + 50  # stays red
    with pytest.raises(UsageError, match="The init image must be 8x8 with 3 channels"):
        _gen(pipeline, seed=4, init_image=np.zeros((4, 4, 3), np.uint8), strength=0.5)


def test_nan_model_output_raises_model_output_error(nan_bundle):
    from diffusion_studio.errors import ModelOutputError

    nan_pipeline = Pipeline(load_bundle(nan_bundle, device="cpu"))
    steps = list(nan_pipeline.iterate(GenerationRequest("a red circle", seed=1, steps=3)).steps)
    assert len(steps) == 3 and np.isnan(steps[-1].x_prev).all()  # the graph really outputs NaN
    with pytest.raises(ModelOutputError) as info:
        nan_pipeline.generate(GenerationRequest("a red circle", seed=1, steps=3))
    assert isinstance(info.value, RuntimeError) and not isinstance(info.value, UsageError)
    assert str(info.value) == "The model produced NaN or infinite values, so there is no image."


@pytest.mark.parametrize(
    ("fields", "core_options"),
    [
        ({"sampler": "ddim", "eta": 0.7}, {"eta": 0.7}),
        ({"sampler": "ddpm", "ddpm_variance": "beta-tilde"}, {"ddpm_variance": "beta_tilde"}),
        ({"sampler": "ddpm", "ddpm_variance": "BETA_TILDE"}, {"ddpm_variance": "beta_tilde"}),
        ({"sampler": "dpmpp-2m", "clip_x0": False}, {"clip_x0": False}),
    ],
)
def test_sampler_options_are_passed_to_the_core_loop(pipeline, fields, core_options):
    bundle = pipeline.bundle
    context, mask = bundle.text_encoder.encode(["a blue square"])
    uncond, uncond_mask = pipeline.unconditional()
    eps_fn = guided_eps_fn(bundle.denoiser, context, mask, uncond, uncond_mask, 2.0)
    steps = list(sample(eps_fn, bundle.schedule, (1, 3, 8, 8), sampler=fields["sampler"], steps=7,
                        rng=np.random.default_rng(31), **core_options))
    reference = steps[-1].x_prev
    result = _gen(pipeline, "a blue square", steps=7, guidance=2.0, seed=31, **fields)
    np.testing.assert_array_equal(result.images, to_uint8(reference))
    default = _gen(pipeline, "a blue square", steps=7, guidance=2.0, seed=31, sampler=fields["sampler"])
    assert np.abs(result.images.astype(int) - default.images.astype(int)).max() > 2
    if "clip_x0" in fields:  # unclipped x̂_0 really leaves [-1, 1] somewhere on this net
        assert max(np.abs(s.x0_pred).max() for s in steps) > 1.0
    meta = result.metadata[0]
    assert meta["clip_x0"] is fields.get("clip_x0", True)
    assert meta.get("eta") == (fields.get("eta", 0.0) if fields["sampler"] == "ddim" else None)
    assert meta.get("ddpm_variance") == ("beta-tilde" if fields["sampler"] == "ddpm" else None)
    assert result.request.ddpm_variance in ("beta", "beta-tilde")


def test_sampler_options_that_do_not_apply_leave_a_note(pipeline):
    eta = _gen(pipeline, seed=2, steps=3, sampler="dpmpp-2m", eta=0.5)
    assert eta.notes == ["eta only changes the ddim sampler; dpmpp-2m ignores it."]
    np.testing.assert_array_equal(eta.images, _gen(pipeline, seed=2, steps=3, sampler="dpmpp-2m").images)
    variance = _gen(pipeline, seed=2, steps=3, sampler="ddim", ddpm_variance="beta-tilde")
    assert variance.notes == ["the DDPM variance only changes the ddpm sampler; ddim ignores it."]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"eta": -0.1}, "Eta must be a number between 0 and 1 (DDIM's η), got -0.1."),
        ({"eta": 1.5}, "Eta must be a number between 0 and 1"),
        ({"eta": float("nan")}, "Eta must be a number between 0 and 1"),
        ({"eta": True}, "Eta must be a number"),
        ({"ddpm_variance": "large"}, "Unknown DDPM variance 'large'; choose one of beta, beta-tilde."),
        ({"ddpm_variance": 3}, "Unknown DDPM variance 3"),  # None is the bundle's (test_pipeline_kinds)
        ({"clip_x0": "yes"}, "clip_x0 must be True or False, got 'yes'."),
    ],
)
def test_bad_sampler_options_raise_one_sentence(pipeline, kwargs, message):
    with pytest.raises(UsageError) as info:
        pipeline.iterate(GenerationRequest("a circle", seed=1, **kwargs))
    assert message in str(info.value) and "\n" not in str(info.value)


def test_init_image_may_be_nchw_with_one_image(pipeline):
    init = np.zeros((8, 8, 3), np.uint8)
    init[:, :, 1] = 255  # pure green
    from diffusion_studio.core.images import from_uint8

    as_uint8 = _gen(pipeline, seed=6, steps=8, init_image=init, strength=0.4)
    as_nchw = _gen(pipeline, seed=6, steps=8, init_image=from_uint8(init)[None], strength=0.4)
    np.testing.assert_array_equal(as_uint8.images, as_nchw.images)
    with pytest.raises(UsageError, match=r"The init image must have shape \(3, 8, 8\)"):
        _gen(pipeline, seed=6, init_image=np.zeros((2, 3, 8, 8), np.float32), strength=0.4)
