"""Our schedules and samplers against diffusers' schedulers: the same model outputs, the same noise.

A fixed deterministic fake network (`fake_output`) answers both sides; every Gaussian draw
(x_T and each step's z) comes from one numpy seed on both sides, in the same order. Our t is
the paper's t ∈ {1, …, T}; diffusers' timestep index is t − 1, and our ᾱ_0 = 1 is diffusers'
"previous timestep −1" (DDPM) / `final_alpha_cumprod` with set_alpha_to_one (DDIM) / the final
σ = 0 (DPM-Solver++, final_sigmas_type="zero"). Every step's x_{t_prev} and x̂_0 must agree
within 1e-5 (diffusers computes in float32, we in float64).

The configurations that match, and why:

- DDPMScheduler over our `make_timesteps` sequence (given as custom `timesteps`, so its
  `previous_timestep` is ours): our clip_x0 / clip_range = its clip_sample / clip_sample_range
  (both clip x̂_0 and take μ̃ from the clipped x̂_0); our ddpm_variance "beta" / "beta-tilde" =
  its variance_type fixed_large / fixed_small; learned_range = learned_range (Improved DDPM
  eq. 15 on the step's β and β̃). Its noise (`randn_tensor`) is replaced by our draws.
- DDIMScheduler steps by a fixed stride T // num_inference_steps, so it follows our timesteps
  only where they are evenly spaced: T = 1000 and 10 steps give 1000, 889, …, 1 (stride 111,
  set through num_inference_steps = 9). set_alpha_to_one=True (ᾱ_0 = 1), and
  use_clipped_model_output=True, because we re-derive ε̂ from the clipped x̂_0. Noise goes in
  through `variance_noise`. DDIM has no learned variance: it gets the first C channels.
- DPMSolverMultistepScheduler (dpmsolver++, solver_order 2, midpoint, final_sigmas_type zero):
  our clip_x0 = its thresholding with sample_max_value 1 (the dynamic threshold s is clamped
  to [1, 1], i.e. clipping to [−1, 1]; diffusers has no plain clip here, so only clip_range 1).
  Both use first order on the first step and on the last step (into t = 0), second order in
  between. On our `make_timesteps` sequence we also take a first-order step into t = 1 (see
  `dpmpp_2m_step`) where diffusers takes a second-order one, so the parity runs over a
  sequence that ends at t = 20 and then jumps to 0 (driven through our own sampling loop).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from diffusers.schedulers import scheduling_ddpm

from diffusion_studio.core.prediction import VarianceKind, parse_prediction_kind, parse_variance_kind
from diffusion_studio.core.sampler_steps import SamplerOptions, make_timesteps, step_function
from diffusion_studio.core.sampling_loop import Step, _run, sample
from diffusion_studio.core.schedule import Schedule, make_schedule

SHAPE = (2, 3, 6, 5)
C = SHAPE[1]
TOL = 1e-5

# (our kind, our β ends) -> diffusers' beta_schedule and ends.
SCHEDULES: dict[str, tuple[str, tuple[float, float] | None, dict[str, Any]]] = {
    "linear": ("linear", None, {"beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02}),
    "scaled_linear": ("scaled_linear", (0.00085, 0.012),
                      {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}),
    "cosine": ("cosine", None, {"beta_schedule": "squaredcos_cap_v2"}),
}
T = 1000


def our_schedule(name: str) -> Schedule:
    kind, ends, _ = SCHEDULES[name]
    return make_schedule(kind, T) if ends is None else make_schedule(kind, T, *ends)


def fake_output(schedule: Schedule, x: np.ndarray, t: np.ndarray, learned_range: bool) -> np.ndarray:
    """A fixed deterministic 'network': smooth in x and t, mixes channels; [-1, 1] variance half.

    Like a trained network its output is √(1−ᾱ_t) x_t + √ᾱ_t g(x_t, t) with g of order 1, so that
    read as ε̂, v̂ or x̂_0 it gives an x̂_0 of order 1 (sometimes beyond ±1, so clipping acts).
    """
    x = np.asarray(x, np.float64)
    s = (np.asarray(t, np.float64) / T)[:, None, None, None]
    ab = schedule.alphas_cumprod[np.asarray(t) - 1][:, None, None, None]
    phase = np.arange(x.shape[1], dtype=np.float64)[None, :, None, None]
    g = np.tanh(0.7 * x + 0.3 * np.roll(x, 1, axis=1)) * (0.6 + s) + 0.15 * np.cos(5.0 * s + phase)
    pred = np.sqrt(1.0 - ab) * x + np.sqrt(ab) * g
    if learned_range:
        v = np.tanh(0.5 * x - 2.0 * s + 0.4 + 0.1 * phase)
        pred = np.concatenate([pred, v], axis=1)
    return pred.astype(np.float32)


def in_float64(scheduler: Any, schedule: Schedule) -> Any:
    """Give a diffusers scheduler our float64 ᾱ_t (its own tables are float32).

    The schedules themselves agree to float32 rounding (the tests below), but float32 ᾱ_t alone
    moves x̂_0 = (x_t − √(1−ᾱ_t) ε̂)/√ᾱ_t by ~1e-3 where ᾱ_T is tiny (cosine: ~1e-8) and x̂_0 is
    not clipped, which would hide the algorithms behind rounding. Only the tables change;
    diffusers' step code runs as it is, on float64 tensors.
    """
    scheduler.betas = torch.from_numpy(np.array(schedule.betas))
    scheduler.alphas = torch.from_numpy(np.array(schedule.alphas))
    scheduler.alphas_cumprod = torch.from_numpy(np.array(schedule.alphas_cumprod))
    if hasattr(scheduler, "final_alpha_cumprod"):
        scheduler.final_alpha_cumprod = torch.tensor(1.0, dtype=torch.float64)
    if isinstance(scheduler, DPMSolverMultistepScheduler):
        # set_timesteps' σ = √((1 − ᾱ)/ᾱ) at our timesteps (then σ = 0 for x_0), kept in float64
        ab = scheduler.alphas_cumprod[scheduler.timesteps]
        scheduler.sigmas = torch.cat([((1 - ab) / ab) ** 0.5, torch.zeros(1, dtype=torch.float64)])
    return scheduler


class Draws:
    """The same stream of float32 standard normals our loop draws from `default_rng(seed)`."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def next(self, shape: tuple[int, ...] = SHAPE) -> torch.Tensor:
        return torch.from_numpy(self.rng.standard_normal(shape, dtype=np.float32).astype(np.float64))


def ours(schedule: Schedule, sampler: str, steps: int, seed: int, **kw: Any) -> list[Step]:
    learned = parse_variance_kind(kw.get("variance", "fixed_large")) is VarianceKind.LEARNED_RANGE
    fn = lambda x, t: fake_output(schedule, x, t, learned)  # noqa: E731
    return list(sample(fn, schedule, SHAPE, sampler=sampler, steps=steps, rng=np.random.default_rng(seed), **kw))


def assert_steps_match(schedule: Schedule, mine: list[Step],
                       theirs: list[tuple[np.ndarray, np.ndarray | None]]) -> None:
    """Every step's x_{t_prev} within TOL, and its x̂_0 as √ᾱ_t x̂_0 (its share of x_t) within TOL.

    (x̂_0 = (x_t − √(1−ᾱ_t) ε̂)/√ᾱ_t: one float32 ulp of x_t moves x̂_0 by ulp/√ᾱ_t, up to 2e-5
    near t = T, on either side.)
    """
    assert len(mine) == len(theirs)
    worst = 0.0
    for step, (x_prev, x0) in zip(mine, theirs):
        worst = max(worst, float(np.abs(step.x_prev - x_prev).max()))
        if x0 is not None:
            worst = max(worst, float(np.abs(step.x0_pred - x0).max()) * schedule.sqrt_alphas_cumprod[step.t - 1])
    assert worst <= TOL, f"max |ours − diffusers| = {worst:.3g}"
    # and the runs are not trivially equal: the image moved away from x_T
    assert float(np.abs(mine[-1].x_prev).mean()) > 0.1


def run_diffusers(schedule: Schedule, scheduler: Any, timesteps: np.ndarray, draws: Draws, learned: bool,
                  step: Any) -> list[tuple[np.ndarray, np.ndarray | None]]:
    x = draws.next()
    out: list[tuple[np.ndarray, np.ndarray | None]] = []
    for i, t in enumerate(int(v) for v in timesteps):
        output = fake_output(schedule, x.numpy(), np.full(SHAPE[0], t), learned)
        model_output = torch.from_numpy(output.astype(np.float64))
        x, x0 = step(scheduler, model_output, t - 1, x, i)
        x = x.to(torch.float32).to(torch.float64)  # our samples are float32 between steps
        out.append((x.numpy(), None if x0 is None else x0.numpy()))
    return out


# --- schedules ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_schedule_betas_match_diffusers(name: str) -> None:
    ref = DDPMScheduler(num_train_timesteps=T, **SCHEDULES[name][2]).betas.double().numpy()
    # diffusers holds β in float32: agreement to float32 rounding
    np.testing.assert_allclose(our_schedule(name).betas, ref, rtol=5e-7, atol=0)


def test_linear_other_T_is_diffusers_linear_with_scaled_ends() -> None:
    ref = DDPMScheduler(num_train_timesteps=250, beta_start=4e-4, beta_end=0.08).betas.double().numpy()
    np.testing.assert_allclose(make_schedule("linear", 250).betas, ref, rtol=2e-7, atol=0)
    ref = DDPMScheduler(num_train_timesteps=250, beta_start=1e-4, beta_end=0.02).betas.double().numpy()
    np.testing.assert_allclose(make_schedule("linear", 250, 1e-4, 0.02).betas, ref, rtol=2e-7, atol=0)


# --- DDPM -----------------------------------------------------------------------------------------

DDPM_VARIANCE = {"fixed_large": "beta", "fixed_small": "beta-tilde"}


def ddpm_case(name: str, prediction: str, variance: str, steps: int, clip: bool, clip_range: float,
              monkeypatch: pytest.MonkeyPatch) -> None:
    schedule = our_schedule(name)
    learned = variance == "learned_range"
    kw: dict[str, Any] = {"prediction": prediction, "variance": variance, "clip_x0": clip, "clip_range": clip_range}
    if not learned:
        kw["ddpm_variance"] = DDPM_VARIANCE[variance]  # the explicit spelling must mean the same
    mine = ours(schedule, "ddpm", steps, seed=11, **kw)

    scheduler = DDPMScheduler(num_train_timesteps=T, **SCHEDULES[name][2], variance_type=variance,
                              prediction_type=prediction, clip_sample=clip, clip_sample_range=clip_range)
    timesteps = make_timesteps(T, steps)
    scheduler.set_timesteps(timesteps=[int(t) - 1 for t in timesteps])
    in_float64(scheduler, schedule)
    draws = Draws(11)
    monkeypatch.setattr(scheduling_ddpm, "randn_tensor", lambda shape, **_: draws.next(tuple(shape)))

    def step(s: Any, model_output: torch.Tensor, t: int, x: torch.Tensor, i: int) -> tuple[torch.Tensor, Any]:
        res = s.step(model_output, t, x)
        return res.prev_sample, res.pred_original_sample

    assert_steps_match(schedule, mine, run_diffusers(schedule, scheduler, timesteps, draws, learned, step))


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("variance", ["fixed_large", "fixed_small", "learned_range"])
def test_ddpm_matches_diffusers(prediction: str, variance: str, monkeypatch: pytest.MonkeyPatch) -> None:
    ddpm_case("linear", prediction, variance, 25, True, 1.0, monkeypatch)


@pytest.mark.parametrize(("name", "prediction", "variance", "steps", "clip", "clip_range"), [
    ("scaled_linear", "epsilon", "learned_range", 40, True, 1.0),
    ("cosine", "v_prediction", "fixed_small", 40, True, 1.0),
    ("cosine", "epsilon", "learned_range", 1000, True, 1.0),
    ("linear", "epsilon", "fixed_large", 1000, False, 1.0),
    ("linear", "v_prediction", "learned_range", 30, True, 0.5),
])
def test_ddpm_matches_diffusers_more(name: str, prediction: str, variance: str, steps: int, clip: bool,
                                     clip_range: float, monkeypatch: pytest.MonkeyPatch) -> None:
    ddpm_case(name, prediction, variance, steps, clip, clip_range, monkeypatch)


# --- DDIM -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize(("name", "clip"), [("linear", True), ("cosine", True), ("scaled_linear", False)])
def test_ddim_matches_diffusers(prediction: str, eta: float, name: str, clip: bool) -> None:
    schedule, steps = our_schedule(name), 10
    timesteps = make_timesteps(T, steps)
    stride = int(timesteps[0] - timesteps[1])
    assert np.all(-np.diff(timesteps) == stride) and timesteps[-1] == 1  # 1000, 889, …, 1
    # learned_range on our side: DDIM must ignore the variance half
    variance = "learned_range" if prediction == "v_prediction" else "fixed_large"
    mine = ours(schedule, "ddim", steps, seed=5, prediction=prediction, variance=variance, eta=eta, clip_x0=clip)

    scheduler = DDIMScheduler(num_train_timesteps=T, **SCHEDULES[name][2], prediction_type=prediction,
                              clip_sample=clip, set_alpha_to_one=True)
    scheduler.set_timesteps(T // stride)  # only sets the stride T // num_inference_steps = 111
    assert T // scheduler.num_inference_steps == stride
    in_float64(scheduler, schedule)
    draws = Draws(5)

    def step(s: Any, model_output: torch.Tensor, t: int, x: torch.Tensor, i: int) -> tuple[torch.Tensor, Any]:
        last = i == steps - 1  # σ = η √β̃ = 0 into ᾱ_0 = 1: we draw no z there
        noise = torch.zeros(SHAPE, dtype=torch.float64) if eta == 0.0 or last else draws.next()
        res = s.step(model_output[:, :C], t, x, eta=eta, use_clipped_model_output=True, variance_noise=noise)
        return res.prev_sample, res.pred_original_sample

    assert_steps_match(schedule, mine, run_diffusers(schedule, scheduler, timesteps, draws, False, step))


# --- DPM-Solver++(2M) -----------------------------------------------------------------------------


def ours_on(schedule: Schedule, timesteps: np.ndarray, seed: int, prediction: str, variance: str,
            clip: bool) -> list[Step]:
    """Our sampling loop over an explicit timestep sequence (sample() always ends at t = 1)."""
    learned = parse_variance_kind(variance) is VarianceKind.LEARNED_RANGE
    it: Iterator[Step] = _run(
        lambda x, t: fake_output(schedule, x, t, learned), schedule, SHAPE, step_function("dpmpp-2m"), timesteps,
        SamplerOptions(clip_x0=clip), np.random.default_rng(seed), None, None,
        parse_prediction_kind(prediction), parse_variance_kind(variance),
    )
    return list(it)


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("clip", [True, False])
@pytest.mark.parametrize("name", ["linear", "scaled_linear", "cosine"])
def test_dpmpp_2m_matches_diffusers(prediction: str, clip: bool, name: str) -> None:
    schedule = our_schedule(name)
    timesteps = np.round(np.linspace(T, 20, 12)).astype(np.int64)  # ends at t = 20, then jumps to 0
    variance = "learned_range" if prediction == "epsilon" else "fixed_large"
    mine = ours_on(schedule, timesteps, 3, prediction, variance, clip)

    scheduler = DPMSolverMultistepScheduler(
        num_train_timesteps=T, **SCHEDULES[name][2], algorithm_type="dpmsolver++", solver_order=2,
        solver_type="midpoint", prediction_type=prediction, thresholding=clip, sample_max_value=1.0,
        lower_order_final=True, final_sigmas_type="zero",
        variance_type="learned_range" if variance == "learned_range" else None,
    )
    scheduler.set_timesteps(timesteps=[int(t) - 1 for t in timesteps])
    in_float64(scheduler, schedule)
    draws = Draws(3)

    def step(s: Any, model_output: torch.Tensor, t: int, x: torch.Tensor, i: int) -> tuple[torch.Tensor, Any]:
        return s.step(model_output, t, x).prev_sample, None  # (diffusers' epsilon path drops the variance half)

    theirs = run_diffusers(schedule, scheduler, timesteps, draws, variance == "learned_range", step)
    assert_steps_match(schedule, mine, theirs)


def test_dpmpp_2m_first_and_last_steps_are_first_order() -> None:
    """Our 2M on a 2-step sequence is DDIM (first order) then x̂_0 — as diffusers' is."""
    schedule = our_schedule("linear")
    timesteps = np.array([T, 500], dtype=np.int64)
    mine = ours_on(schedule, timesteps, 9, "epsilon", "fixed_large", True)
    ddim = list(_run(lambda x, t: fake_output(schedule, x, t, False), schedule, SHAPE, step_function("ddim"), timesteps,
                     SamplerOptions(), np.random.default_rng(9), None, None))
    for a, b in zip(mine, ddim):
        np.testing.assert_allclose(a.x_prev, b.x_prev, atol=1e-6)
