"""--learn-sigma (Improved DDPM §3.1) and --schedule: a real tiny run, its events, checkpoints,
config round trip, resume, sampling with the learned variance, and bad flag combinations."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from diffusion_studio.cli import main
from diffusion_studio.core.guidance import guided_eps_fn
from diffusion_studio.core.images import to_uint8
from diffusion_studio.core.prediction import VarianceKind
from diffusion_studio.core.sampling_loop import run_to_end, sample
from diffusion_studio.core.schedule import make_schedule
from diffusion_studio.errors import UsageError
from diffusion_studio.inference.bundle_loader import load_bundle
from diffusion_studio.inference.pipeline import GenerationRequest, Pipeline
from diffusion_studio.training.checkpoints import load_checkpoint
from diffusion_studio.training.config import TrainConfig
from diffusion_studio.training.datasets import make_stream
from diffusion_studio.training.denoiser import TorchDenoiser, model_variance
from diffusion_studio.training.events import read_events
from diffusion_studio.training.samples import sample_images
from diffusion_studio.training.trainer import Trainer
from diffusion_studio.training.unet import UNet, UNetConfig
from diffusion_studio.training.vlb import VariationalBound
from exporter.cli import main as export_main

from .conftest import tiny_config, tiny_unet

STEPS = 160


def learn_sigma_config(**overrides) -> TrainConfig:
    # p_uncond 0.9: most captions are "" (cached), so the text encoder costs little; the bound
    # does not care about the prompt.
    fields = dict(unet=replace(tiny_unet(16), learn_sigma=True), batch_size=8, lr=2e-3, log_every=10,
                  p_uncond=0.9)
    fields.update(overrides)
    return tiny_config(**fields)


def run_config() -> TrainConfig:
    return learn_sigma_config(steps=STEPS, checkpoint_every=80, schedule="cosine")


@pytest.fixture(scope="module")
def run(tmp_path_factory, text_encoder):
    """One learn-sigma run of 160 updates on the cosine schedule (a 16 px, 8-channel U-Net; ~30 s of one core)."""
    folder = tmp_path_factory.mktemp("learn-sigma") / "run"
    events: list[dict] = []
    Trainer(run_config(), folder, text_encoder=text_encoder, listeners=[events.append]).run()
    return folder, events


def test_unet_outputs_epsilon_and_v_zero_initialised():
    cfg = replace(tiny_unet(16), learn_sigma=True)
    model = UNet(cfg)
    assert cfg.out_channels == 6 and model.conv_out.weight.shape[0] == 6
    out = model(torch.randn(2, 3, 16, 16), torch.tensor([1, 500]), torch.randn(2, 32, 384), torch.ones(2, 32))
    assert out.shape == (2, 6, 16, 16) and not out.any()  # ε̂ = 0 and v = 0 (Σ halfway in log space)
    assert UNet(tiny_unet(16))(torch.randn(1, 3, 16, 16), torch.tensor([3]), torch.randn(1, 32, 384),
                               torch.ones(1, 32)).shape == (1, 3, 16, 16)
    assert model_variance(model) == "learned_range" and model_variance(UNet(tiny_unet(16))) == "fixed_large"


def test_l_vlb_falls_and_is_logged_beside_l_simple(run):
    folder, events = run
    progress = [e for e in events if e["event"] == "progress"]
    assert len(progress) == STEPS // 10
    vlb = [e["loss_vlb"] for e in progress]
    simple = [e["loss"] for e in progress]
    assert all(np.isfinite(vlb)) and all(v > 0 for v in vlb)
    # T·L_t (bits/dim) is heavy-tailed: a window whose batch drew t = 1 holds the decoder term
    # weighed T times (this run has one of ~5,000 bits/dim in its third window), so the first and the
    # last four windows are compared by their median, and by their mean without the largest window.
    first, last = np.median(vlb[:4]), np.median(vlb[-4:])
    assert last < 0.5 * first, vlb
    assert np.mean(sorted(vlb[-4:])[:3]) < 0.5 * np.mean(sorted(vlb[:4])[:3]), vlb
    assert np.mean(simple[-4:]) < 0.5 * np.mean(simple[:4])  # "loss" is still L_simple, and falls
    # events.jsonl holds both; the done event carries the last window's metrics
    logged = read_events(folder / "events.jsonl")
    assert [e["loss_vlb"] for e in logged if e["event"] == "progress"] == vlb
    assert logged[-1]["event"] == "done" and logged[-1]["loss_vlb"] == vlb[-1]


def test_the_variance_head_learned_a_better_bound_than_its_initial_variance(run, text_encoder):
    """On a held-out batch, the learned Σ_θ gives a lower L_vlb than v = 0 (its zero init)."""
    folder, _ = run
    ck = load_checkpoint(folder)
    model = UNet(ck.unet_config)
    model.load_state_dict(ck.model)
    model.eval()
    x0, captions = make_stream("shapes", 16, 64, 12345).batch(0)
    g = torch.Generator().manual_seed(7)
    t = torch.randint(1, 1001, (64,), generator=g)
    eps = torch.randn(x0.shape, generator=g)
    schedule = make_schedule("cosine", 1000)
    ab = torch.from_numpy(schedule.alphas_cumprod.astype(np.float32))[t - 1].view(-1, 1, 1, 1)
    x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
    context, mask = text_encoder.encode(captions)
    with torch.no_grad():
        eps_pred, v = model(x_t, t, torch.from_numpy(context), torch.from_numpy(mask)).chunk(2, dim=1)
    bound = VariationalBound(schedule)
    learned = float(bound.terms(x0, x_t, t, eps_pred, v).mean())
    at_init = float(bound.terms(x0, x_t, t, eps_pred, torch.zeros_like(v)).mean())
    assert learned < at_init
    assert 0.05 < float(v.abs().mean()) < 1.5  # v moved away from its zero init, within a sane range


def test_checkpoint_and_config_carry_the_variance_head(run):
    folder, _ = run
    saved = json.loads((folder / "config.json").read_text())
    assert saved["unet"]["learn_sigma"] is True and saved["vlb_weight"] == 0.001 and saved["schedule"] == "cosine"
    config = TrainConfig.load(folder / "config.json")
    assert config.learn_sigma and config == run_config()
    ck = load_checkpoint(folder)
    assert ck.step == STEPS and ck.unet_config.learn_sigma
    assert ck.model["conv_out.weight"].shape[0] == 6 and ck.ema["conv_out.weight"].shape[0] == 6
    # a U-Net without the head does not take these weights
    with pytest.raises(RuntimeError):
        UNet(tiny_unet(16)).load_state_dict(ck.model)


def test_config_round_trip_and_old_configs():
    cfg = learn_sigma_config(schedule="cosine", vlb_weight=0.002)
    back = TrainConfig.from_dict(json.loads(cfg.to_json()))
    assert back == cfg and back.learn_sigma and back.schedule == "cosine" and back.vlb_weight == 0.002
    # a config written before learn_sigma existed reads as a fixed-variance U-Net, and writes the same dict
    plain = tiny_config()
    d = plain.to_dict()
    assert "learn_sigma" not in d["unet"]
    assert TrainConfig.from_dict(d).unet.learn_sigma is False
    assert UNetConfig.from_dict({**d["unet"], "learn_sigma": False}).to_dict() == d["unet"]


@pytest.mark.parametrize("change, needle", [
    (dict(vlb_weight=-0.1), "vlb_weight must be in [0.0, 1.0]"),
    (dict(vlb_weight=float("nan")), "vlb_weight must be in"),
    (dict(vlb_weight="0.1"), "vlb_weight must be in"),
    (dict(schedule="quadratic"), "Unknown noise schedule 'quadratic'"),
])
def test_bad_config_values_are_one_sentence(change, needle):
    with pytest.raises(UsageError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        learn_sigma_config(**change).validate()
    with pytest.raises(UsageError, match="unet.learn_sigma must be true or false"):
        UNetConfig.from_dict({**tiny_unet(16).to_dict(), "learn_sigma": "yes"})


def test_resume_continues_exactly(tmp_path, text_encoder):
    cfg = learn_sigma_config(steps=10, checkpoint_every=5, batch_size=4, log_every=5)
    straight = Trainer(cfg, tmp_path / "a", text_encoder=text_encoder)
    straight.run()
    Trainer(replace(cfg, steps=5), tmp_path / "b", text_encoder=text_encoder).run()
    resumed = Trainer(cfg, tmp_path / "b", resume=True, text_encoder=text_encoder)
    assert resumed.step == 5 and resumed.vlb is not None
    resumed.run()
    for (name, pa), (_, pb) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items()):
        torch.testing.assert_close(pa, pb, rtol=0, atol=1e-7, msg=name)
    # the run cannot be resumed as a fixed-variance one (the U-Net differs)
    with pytest.raises(UsageError, match="Cannot resume: 'unet'"):
        Trainer(replace(cfg, steps=20, unet=tiny_unet(16)), tmp_path / "b", resume=True, text_encoder=text_encoder)


def test_ddpm_sampling_uses_the_learned_variance_between_beta_tilde_and_beta(run, text_encoder):
    """One DDPM step from the same x_t and the same z under σ² = β̃, σ² = β and the learned Σ_θ: the
    means are equal, so x_θ − x_β̃ = (σ_θ − σ_β̃) z and x_β − x_β̃ = (σ_β − σ_β̃) z give σ_θ per pixel,
    which must be exp(v'·log β + (1 − v')·log β̃), v' = (v + 1)/2, with the network's own v there."""
    folder, _ = run
    ck = load_checkpoint(folder)
    model = UNet(ck.unet_config)
    model.load_state_dict(ck.ema)
    denoiser = TorchDenoiser(model)
    context, mask = text_encoder.encode(["a red circle", "a blue square"])
    schedule = make_schedule("cosine", 1000)
    shape, init = (2, 3, 16, 16), np.zeros((3, 16, 16), np.float32)

    def first_step(variance: str, ddpm_variance: str | None = None):
        def eps_fn(x, t):
            out = denoiser(x, t, context, mask)
            return out if variance == "learned_range" else out[:, :3]  # a fixed-variance run sees ε̂ only

        # img2img at strength 0.2: the first step goes from t = 200 (x_t = q_sample of a gray image) to t = 1
        steps = sample(eps_fn, schedule, shape, sampler="ddpm", steps=10, rng=np.random.default_rng(3),
                       variance=variance, ddpm_variance=ddpm_variance, init_image=init, strength=0.2)
        return next(steps)

    step = first_step(model_variance(model))
    learned, t, t_prev = step.x_prev.astype(np.float64), step.t, step.t_prev
    small = first_step("fixed_small", "beta-tilde").x_prev.astype(np.float64)
    large = first_step("fixed_large", "beta").x_prev.astype(np.float64)
    assert (t, t_prev) == (200, 1) and not np.allclose(learned, small) and not np.allclose(learned, large)
    ab_t, ab_s = schedule.alpha_bar(t), schedule.alpha_bar(t_prev)
    beta = 1.0 - ab_t / ab_s  # the step's β and β̃ (a sub-sequence of timesteps)
    beta_tilde = (1.0 - ab_s) / (1.0 - ab_t) * beta
    sigma = np.sqrt(beta_tilde) + (learned - small) / (large - small) * (np.sqrt(beta) - np.sqrt(beta_tilde))
    # the network's v at that x_t: x_t = √ᾱ_t·0 + √(1 − ᾱ_t) z with the loop's first draw z
    z = np.random.default_rng(3).standard_normal(shape, dtype=np.float32)
    x_t = (np.sqrt(1.0 - ab_t) * z).astype(np.float32)
    v = denoiser(x_t, np.full(2, t, np.int64), context, mask)[:, 3:].astype(np.float64)
    frac = (v + 1.0) / 2.0
    expected = np.exp(0.5 * (frac * np.log(beta) + (1.0 - frac) * np.log(beta_tilde)))
    np.testing.assert_allclose(sigma, expected, rtol=2e-3)
    inside = np.abs(v) <= 1.0  # there Σ_θ lies between β̃ and β (v is not clamped, as in improved-diffusion)
    assert inside.mean() > 0.5 and sigma.std() > 1e-3 * sigma.mean()  # one variance per pixel
    assert np.all(sigma[inside] ** 2 >= beta_tilde * (1 - 1e-6)) and np.all(sigma[inside] ** 2 <= beta * (1 + 1e-6))
    # the trainer's sample grids go through the same loop with the model's variance
    images = sample_images(model, schedule, text_encoder.encode, ["a red circle"], image_size=16, steps=4,
                           sampler="ddpm")
    assert images.shape == (1, 16, 16, 3) and images.std() > 1.0


def test_cli_learn_sigma_and_cosine_schedule(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--preset", "cpu-quick", "--out", str(out), "--image-size", "16", "--batch-size", "2",
            "--steps", "3", "--threads", "1", "--sample-every", "0", "--learn-sigma", "--schedule", "cosine", "--json"]
    assert main(args) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert all(np.isfinite(e["loss_vlb"]) for e in lines if e["event"] == "progress")
    saved = json.loads((out / "config.json").read_text())
    assert saved["schedule"] == "cosine" and saved["unet"]["learn_sigma"] is True
    # --resume keeps both (the flags need not be repeated)
    assert main(["train", "--preset", "cpu-quick", "--out", str(out), "--steps", "5", "--threads", "1",
                 "--resume", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[0]["resumed"] is True and lines[-1]["step"] == 5 and "loss_vlb" in lines[-1]
    assert load_checkpoint(out).unet_config.learn_sigma
    # a changed schedule cannot be resumed
    assert main(["train", "--preset", "cpu-quick", "--out", str(out), "--steps", "7", "--resume",
                 "--schedule", "linear"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Cannot resume: 'schedule' is 'linear'" in err


def test_cli_bad_flag_combinations_exit_2(tmp_path, capsys):
    def refused(*extra: str) -> str:
        code = main(["train", "--preset", "cpu-quick", "--image-size", "16", "--batch-size", "2", "--threads", "1",
                     "--sample-every", "0", *extra])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
        return err

    assert "invalid choice: 'quadratic'" in refused("--out", str(tmp_path / "x"), "--schedule", "quadratic")
    assert not (tmp_path / "x").exists()
    # a fixed-variance run cannot be resumed with a variance head
    plain = tmp_path / "plain"
    assert main(["train", "--preset", "cpu-quick", "--out", str(plain), "--image-size", "16", "--batch-size", "2",
                 "--steps", "2", "--threads", "1", "--sample-every", "0", "--json"]) == 0
    capsys.readouterr()
    err = refused("--out", str(plain), "--steps", "4", "--resume", "--learn-sigma")
    assert "Cannot resume with --learn-sigma" in err and "start a new run" in err
    # --init-from needs the same U-Net: fixed-variance weights do not start a learn-sigma run
    err = refused("--out", str(tmp_path / "y"), "--steps", "2", "--learn-sigma", "--init-from", str(plain))
    assert "U-Net differs" in err and not (tmp_path / "y").exists()


def test_export_declares_the_learned_variance_and_the_cosine_schedule(run, tmp_path, text_encoder):
    """The exporter writes a format-2 bundle (diffusion.variance learned_range, schedule cosine, a 2C
    output), and the app's ONNX pipeline samples DDPM with the learned Σ_θ like the torch U-Net does."""
    folder, _ = run
    bundle = tmp_path / "bundle"
    assert export_main([str(folder), "--out", str(bundle)]) == 0
    spec = json.loads((bundle / "model.json").read_text())
    assert spec["format_version"] == 2
    assert spec["diffusion"] == {"T": 1000, "schedule": "cosine", "prediction": "epsilon", "variance": "learned_range"}
    report = json.loads((bundle / "validation.json").read_text())
    assert report["passed"] and report["network"][0]["max_abs"] < 1e-3  # torch vs ONNX on all 6 channels
    loaded = load_bundle(bundle, device="cpu")
    assert loaded.variance is VarianceKind.LEARNED_RANGE and loaded.schedule.kind.value == "cosine"
    request = GenerationRequest(prompt="a red circle", sampler="ddpm", steps=10, guidance=2.0, seed=5)
    got = Pipeline(loaded).generate(request).images[0]
    ck = load_checkpoint(folder)
    model = UNet(ck.unet_config)
    model.load_state_dict(ck.ema)
    ref = sample_images(model, make_schedule("cosine", 1000), text_encoder.encode, ["a red circle"], image_size=16,
                        steps=10, guidance=2.0, seed=5, sampler="ddpm")[0]
    assert np.abs(got.astype(int) - ref.astype(int)).max() <= 2
    # with a fixed σ² = β the same seed gives another image: the learned variance is what made it
    fixed = TorchDenoiser(model)
    context, mask = text_encoder.encode(["a red circle"])
    uncond, uncond_mask = text_encoder.encode([""])
    eps_fn = guided_eps_fn(lambda x, t, c, m: fixed(x, t, c, m)[:, :3], context, mask, uncond, uncond_mask, 2.0)
    other = to_uint8(run_to_end(sample(eps_fn, make_schedule("cosine", 1000), (1, 3, 16, 16), sampler="ddpm",
                                       steps=10, rng=np.random.default_rng(5))).x_prev)[0]
    assert np.abs(other.astype(int) - ref.astype(int)).max() > 10
