"""The one sampling loop: a generator that drives any sampler and yields after every step.

All noise (x_T and every z) comes from the `numpy.random.Generator` passed in, drawn on
the CPU as float32, so a seed gives the same image with any backend.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from diffusion_studio.core.forward import q_sample
from diffusion_studio.core.params import (
    DEFAULT_SAMPLER,
    DEFAULT_STEPS,
    DdpmVariance,
    check_clip_range,
    check_eta,
    check_strength,
    parse_ddpm_variance,
)
from diffusion_studio.core.prediction import (
    PredictionKind,
    VarianceKind,
    interpret_output,
    output_channels,
    parse_prediction_kind,
    parse_variance_kind,
)
from diffusion_studio.core.sampler_steps import SamplerOptions, SolverState, StepFn, make_timesteps, step_function
from diffusion_studio.core.schedule import Schedule
from diffusion_studio.errors import Cancelled, ModelOutputError, UsageError

__all__ = ["Denoiser", "EpsFn", "Step", "sample", "img2img_timesteps", "run_to_end", "ddpm_variance_for"]


class Denoiser(Protocol):
    """A network: (x [N,C,H,W] f32, t [N] int64, context [N,L,D] f32, mask [N,L] f32) -> its raw output.

    The raw output is [N,C,H,W] (ε̂, v̂ or x̂_0, see `prediction.PredictionKind`), or [N,2C,H,W]
    for a learned_range model (the prediction, then the variance interpolation v).
    """

    def __call__(
        self, x: np.ndarray, t: np.ndarray, context: np.ndarray, context_mask: np.ndarray
    ) -> np.ndarray: ...


EpsFn = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (x_t, t[N]) -> the raw network output (ε̂ by default)


@dataclass(frozen=True)
class Step:
    """One finished sampler step: from x_t at timestep t to x_prev at t_prev.

    index: 0-based step number; count: number of steps in this run; t: the timestep the
    network saw; x_prev: the sample the step produced, at timestep t_prev (the final x_0
    after the last step); x0_pred: the step's x̂_0; eps: the ε̂ it used (whatever the network
    predicts: both are converted from its output, clipped x̂_0 and ε̂ re-derived from it).
    """

    index: int
    count: int
    t: int
    x_prev: np.ndarray
    x0_pred: np.ndarray
    eps: np.ndarray
    t_prev: int = 0


def img2img_timesteps(T: int, steps: int, strength: float) -> np.ndarray:
    """SDEdit timesteps: start at t = round(strength·T), run round(strength·steps) steps.

    strength 1.0 gives exactly the text-to-image timesteps.
    """
    strength = check_strength(strength)
    make_timesteps(T, steps)  # validates steps against T
    t_start = max(1, round(strength * T))
    n = min(max(1, round(strength * steps)), t_start)
    return make_timesteps(T, n, t_start)


def ddpm_variance_for(variance: str | VarianceKind) -> DdpmVariance | None:
    """The DDPM σ_t² a model's variance kind implies: fixed_large -> β, fixed_small -> β̃, learned -> None."""
    kind = parse_variance_kind(variance)
    if kind is VarianceKind.LEARNED_RANGE:
        return None
    return DdpmVariance.BETA if kind is VarianceKind.FIXED_LARGE else DdpmVariance.BETA_TILDE


def _check_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise UsageError(f"shape must be a tuple of positive integers, got {shape!r}.") from None
    if len(shape) < 1 or any(s < 1 for s in shape):
        raise UsageError(f"shape must be a tuple of positive integers, got {shape!r}.")
    return shape


def _check_init_image(init_image: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    x0 = np.asarray(init_image, dtype=np.float32)
    if x0.shape == shape[1:]:
        x0 = np.broadcast_to(x0, shape)
    if x0.shape != shape:
        raise UsageError(f"init_image must have shape {shape} (or {shape[1:]}), got {x0.shape}.")
    if not np.all(np.isfinite(x0)) or x0.min() < -1.0 - 1e-3 or x0.max() > 1.0 + 1e-3:
        raise UsageError("init_image must hold finite values in [-1, 1].")
    return np.clip(x0, -1.0, 1.0)


def sample(
    eps_fn: EpsFn,
    schedule: Schedule,
    shape: tuple[int, ...],
    *,
    sampler: str = DEFAULT_SAMPLER.value,
    steps: int = DEFAULT_STEPS,
    rng: np.random.Generator,
    clip_x0: bool = True,
    eta: float = 0.0,
    ddpm_variance: str | None = None,
    init_image: np.ndarray | None = None,
    strength: float = 1.0,
    should_stop: Callable[[], bool] | None = None,
    prediction: str | PredictionKind = PredictionKind.EPSILON.value,
    variance: str | VarianceKind = VarianceKind.FIXED_LARGE.value,
    clip_range: float = 1.0,
) -> Iterator[Step]:
    """Run the reverse process from x_T (or a noised init_image) to x_0, yielding a Step each step.

    `prediction` and `variance` describe the model (diffusers' prediction_type and
    variance_type): eps_fn's output is ε̂, v̂ or x̂_0 with C channels, or 2C with
    "learned_range", whose learned Σ_θ the DDPM sampler then uses (DDIM and DPM-Solver++ ignore
    it). `ddpm_variance` ("beta" | "beta-tilde") is the DDPM sampler's fixed σ_t²; None takes the
    model's (`ddpm_variance_for`: "beta" for fixed_large, "beta-tilde" for fixed_small); it is
    ignored with learned_range. x̂_0 is clipped to [−clip_range, clip_range] when `clip_x0`.

    `should_stop` is checked before every network call; when it returns True the
    generator raises `Cancelled`. Bad arguments raise `UsageError` here, before any step.
    """
    step_fn = step_function(sampler)
    prediction = parse_prediction_kind(prediction)
    variance = parse_variance_kind(variance)
    fixed = parse_ddpm_variance(ddpm_variance) if ddpm_variance is not None else ddpm_variance_for(variance)
    clip_range = check_clip_range(clip_range)
    eta = check_eta(eta)
    if not isinstance(rng, np.random.Generator):
        raise UsageError("rng must be a numpy.random.Generator (for example numpy.random.default_rng(seed)).")
    shape = _check_shape(shape)
    check_strength(strength, has_init_image=init_image is not None)
    timesteps = img2img_timesteps(schedule.T, steps, strength)
    if init_image is not None:
        init_image = _check_init_image(init_image, shape)
    options = SamplerOptions(
        clip_x0=bool(clip_x0), eta=eta, ddpm_variance=fixed or DdpmVariance.BETA, clip_range=clip_range
    )
    return _run(
        eps_fn, schedule, shape, step_fn, timesteps, options, rng, init_image, should_stop, prediction, variance
    )


def _run(
    eps_fn: EpsFn,
    schedule: Schedule,
    shape: tuple[int, ...],
    step_fn: StepFn,
    timesteps: np.ndarray,
    options: SamplerOptions,
    rng: np.random.Generator,
    init_image: np.ndarray | None,
    should_stop: Callable[[], bool] | None,
    prediction: PredictionKind = PredictionKind.EPSILON,
    variance: VarianceKind = VarianceKind.FIXED_LARGE,
) -> Iterator[Step]:
    # x_T ~ N(0, I) (Algorithm 2, line 1); SDEdit instead noises the input image to t_start.
    z = rng.standard_normal(shape, dtype=np.float32)
    # With strength 1 (timesteps start at T) x_T is pure noise, exactly as in text-to-image.
    if init_image is not None and int(timesteps[0]) < schedule.T:
        x = q_sample(schedule, init_image, int(timesteps[0]), z)
    else:
        x = z

    state = SolverState()
    count = len(timesteps)
    out_shape = (shape[0], output_channels(shape[1], variance), *shape[2:]) if len(shape) > 1 else shape
    for i, t in enumerate(int(v) for v in timesteps):
        t_prev = int(timesteps[i + 1]) if i + 1 < count else 0
        if should_stop is not None and should_stop():
            raise Cancelled("sampling was cancelled.")
        output = np.asarray(eps_fn(x, np.full((shape[0],), t, dtype=np.int64)))
        if output.shape != out_shape:
            raise UsageError(
                f"the denoiser returned an output of shape {output.shape} for x of shape {x.shape} "
                f"(expected {out_shape} for {variance.value})."
            )
        # The raw output -> x̂_0, ε̂ (and the learned variance fraction) for every prediction kind.
        pred = interpret_output(schedule, x, output.astype(np.float32, copy=False), t, prediction, variance)
        result = step_fn(schedule, x, pred, t, t_prev, state, rng, options)
        x, state = result.x_prev, result.state
        yield Step(index=i, count=count, t=t, x_prev=x, x0_pred=result.x0_pred, eps=result.eps, t_prev=t_prev)


def run_to_end(
    steps: Iterable[Step], on_step: Callable[[Step], None] | None = None, *, check_finite: bool = True
) -> Step:
    """Drive a `sample()` run to its last step (`on_step` sees every step) and check its x_0.

    The one run-to-the-end for every denoiser (ONNX pipeline, torch training samples, export
    parity). Returns the last Step, whose `x_prev` is the final sample x_0; raises
    `ModelOutputError` when x_0 holds NaN or infinite values (there is no image then),
    unless `check_finite` is False.
    """
    last: Step | None = None
    for last in steps:
        if on_step is not None:
            on_step(last)
    if last is None:  # sample() validates steps >= 1, so only an empty iterable gets here
        raise ValueError("run_to_end needs at least one step.")
    if check_finite and not np.all(np.isfinite(last.x_prev)):
        raise ModelOutputError("The model produced NaN or infinite values, so there is no image.")
    return last
