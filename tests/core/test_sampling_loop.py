"""The sample() generator: seeded goldens, determinism, step records, img2img, cancellation, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from diffusion_studio.core.forward import q_sample
from diffusion_studio.core.sampler_steps import make_timesteps
from diffusion_studio.core.sampling_loop import Step, run_to_end, sample
from diffusion_studio.core.schedule import make_schedule
from diffusion_studio.errors import Cancelled, UsageError

SHAPE = (2, 3, 4, 4)
W = np.array([[0.9, -0.1, 0.05], [0.05, 1.0, -0.1], [0.1, 0.05, 0.95]], dtype=np.float32)
SCHEDULE = make_schedule("linear", 1000)


def tiny_denoiser(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    """A fixed deterministic stand-in for a network: a Gaussian-like ε with channel mixing and a sine."""
    ab = SCHEDULE.alphas_cumprod[t - 1][:, None, None, None]
    mixed = np.einsum("ij,njhw->nihw", W, x)
    eps = np.sqrt(1 - ab) * (mixed - 0.2 * np.sqrt(ab)) / (0.1 * ab + 1 - ab) + 0.02 * np.sin(3 * x)
    return eps.astype(np.float32)


def final(sampler: str, steps: int, seed: int = 1234, **kw) -> np.ndarray:
    schedule = make_schedule("linear", 1000)
    return run_to_end(sample(tiny_denoiser, schedule, SHAPE, sampler=sampler, steps=steps,
                             rng=np.random.default_rng(seed), **kw)).x_prev


def fingerprint(x: np.ndarray) -> list[float]:
    flat = x.reshape(-1).astype(np.float64)
    return [float(flat.sum()), float(np.abs(flat).mean()), float(flat[0]), float(flat[17]), float(flat[-1])]


# Generated once with this file's settings (numpy PCG64, float32 noise) and frozen here.
GOLDEN = {
    "ddpm-25": ("ddpm", 25, {}, [15.0369547, 0.344546498, 0.0765431151, 0.334799498, 0.73686564]),
    "ddpm-25-beta-tilde": ("ddpm", 25, {"ddpm_variance": "beta-tilde"},
                           [15.6303524, 0.245996687, 0.201959312, 0.167925104, 0.607184231]),
    "ddim-10": ("ddim", 10, {}, [17.3014562, 0.304502471, -0.56681025, -0.587014019, -0.342602134]),
    "ddim-10-eta0.5": ("ddim", 10, {"eta": 0.5}, [19.7737545, 0.266264878, 0.00512898201, -0.261780351, 0.152418256]),
    "dpmpp-2m-10": ("dpmpp-2m", 10, {}, [17.7598041, 0.296140877, -0.517000496, -0.543078065, -0.315617144]),
    "dpmpp-2m-10-noclip": ("dpmpp-2m", 10, {"clip_x0": False},
                           [18.0360237, 0.336730152, -0.752145112, -0.758913219, -0.37880066]),
}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_seeded_loop_matches_golden_values(name: str) -> None:
    sampler, steps, kw, expected = GOLDEN[name]
    got = fingerprint(final(sampler, steps, **kw))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5, err_msg=f"{name}: got {got!r}")


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpmpp-2m"])
def test_same_seed_same_output_and_different_seed_differs(sampler: str) -> None:
    kw = {"eta": 1.0} if sampler == "ddim" else {}
    a, b = final(sampler, 8, seed=7, **kw), final(sampler, 8, seed=7, **kw)
    np.testing.assert_array_equal(a, b)
    c = final(sampler, 8, seed=8, **kw)
    assert np.abs(a - c).mean() > 0.05


def test_step_records() -> None:
    schedule = make_schedule("linear", 1000)
    seen_t: list[np.ndarray] = []

    def eps_fn(x, t):
        seen_t.append(t)
        return tiny_denoiser(x, t)

    steps = list(sample(eps_fn, schedule, SHAPE, sampler="ddim", steps=6, rng=np.random.default_rng(0)))
    expected_t = make_timesteps(1000, 6)
    assert [s.index for s in steps] == list(range(6)) and all(s.count == 6 for s in steps)
    assert [s.t for s in steps] == expected_t.tolist() and steps[0].t == 1000
    assert [s.t_prev for s in steps] == expected_t.tolist()[1:] + [0]
    for s, t in zip(steps, seen_t):
        assert isinstance(s, Step)
        assert t.dtype == np.int64 and t.shape == (2,) and np.all(t == s.t)
        for a in (s.x_prev, s.x0_pred, s.eps):
            assert a.shape == SHAPE and a.dtype == np.float32
        assert np.all(np.abs(s.x0_pred) <= 1.0)  # clip_x0 defaults to True
    # the last step of DDIM lands on x̂_0 of t = 1: x_0 = √ᾱ_0 x̂_0 with ᾱ_0 = 1
    np.testing.assert_allclose(steps[-1].x_prev, steps[-1].x0_pred, atol=1e-6)


def test_make_timesteps() -> None:
    np.testing.assert_array_equal(make_timesteps(1000, 1000), np.arange(1000, 0, -1))
    assert make_timesteps(1000, 1).tolist() == [1000]
    assert make_timesteps(1000, 2).tolist() == [1000, 1]
    assert make_timesteps(10, 4).tolist() == [10, 7, 4, 1]
    for steps in (3, 20, 37, 999):
        ts = make_timesteps(1000, steps)
        assert ts.dtype == np.int64 and len(ts) == steps and ts[0] == 1000 and ts[-1] == 1
        gaps = -np.diff(ts)
        assert np.all(gaps >= 1) and np.all(np.abs(gaps - 999 / (steps - 1)) <= 1)


def test_ddim_eta0_and_dpmpp_draw_only_x_T() -> None:
    for sampler in ("ddim", "dpmpp-2m"):
        rng, ref = np.random.default_rng(3), np.random.default_rng(3)
        seen: list[np.ndarray] = []

        def eps_fn(x, t, seen=seen):
            seen.append(x.copy())
            return tiny_denoiser(x, t)

        list(sample(eps_fn, SCHEDULE, SHAPE, sampler=sampler, steps=5, rng=rng))
        x_T = ref.standard_normal(SHAPE, dtype=np.float32)
        np.testing.assert_array_equal(seen[0], x_T)  # x_T is the first draw of the rng
        assert rng.standard_normal() == ref.standard_normal()  # and no other draw happened


def test_clip_x0() -> None:
    schedule = make_schedule("linear", 1000)
    zero = lambda x, t: np.zeros_like(x)  # noqa: E731  x̂_0 = x_T/√ᾱ_T is huge at t = T
    clipped = next(sample(zero, schedule, SHAPE, sampler="ddim", steps=5, rng=np.random.default_rng(0)))
    raw = next(sample(zero, schedule, SHAPE, sampler="ddim", steps=5, rng=np.random.default_rng(0), clip_x0=False))
    assert np.abs(clipped.x0_pred).max() == 1.0 and np.abs(raw.x0_pred).max() > 50
    # after clipping, ε is re-derived so that x_t = √ᾱ x̂_0 + √(1−ᾱ) ε still holds
    x_T = np.random.default_rng(0).standard_normal(SHAPE, dtype=np.float32)
    np.testing.assert_allclose(q_sample(schedule, clipped.x0_pred, 1000, clipped.eps), x_T, atol=1e-5)


def test_img2img_starts_from_the_noised_image() -> None:
    schedule = make_schedule("linear", 1000)
    init = np.random.default_rng(9).uniform(-1, 1, SHAPE).astype(np.float32)
    first_x: list[np.ndarray] = []

    def eps_fn(x, t):
        if not first_x:
            first_x.append(x.copy())
        return tiny_denoiser(x, t)

    steps = list(sample(eps_fn, schedule, SHAPE, sampler="dpmpp-2m", steps=20, rng=np.random.default_rng(4),
                        init_image=init, strength=0.5))
    assert len(steps) == 10 and steps[0].t == 500 and steps[-1].t == 1
    z = np.random.default_rng(4).standard_normal(SHAPE, dtype=np.float32)
    np.testing.assert_allclose(first_x[0], q_sample(schedule, init, 500, z), atol=1e-6)
    # a [C, H, W] image is used for every batch item
    one = list(sample(tiny_denoiser, schedule, SHAPE, sampler="ddim", steps=4, rng=np.random.default_rng(1),
                      init_image=init[0], strength=0.3))
    assert one[0].t == 300 and len(one) == 1


def test_img2img_strength_one_is_text_to_image() -> None:
    init = np.full(SHAPE, 0.5, np.float32)
    np.testing.assert_array_equal(final("ddim", 6, init_image=init, strength=1.0), final("ddim", 6))


def test_should_stop_is_checked_before_every_network_call() -> None:
    schedule = make_schedule("linear", 1000)
    calls = {"eps": 0, "stop": 0}

    def eps_fn(x, t):
        calls["eps"] += 1
        return tiny_denoiser(x, t)

    def should_stop() -> bool:
        calls["stop"] += 1
        return calls["eps"] >= 3

    gen = sample(eps_fn, schedule, SHAPE, sampler="ddpm", steps=10, rng=np.random.default_rng(0),
                 should_stop=should_stop)
    assert next(gen).index == 0
    with pytest.raises(Cancelled):
        list(gen)
    assert calls == {"eps": 3, "stop": 4}


BAD = [
    ({"steps": 0}, "Steps must be an integer between 1 and 1000 (the model's T), got 0."),
    ({"steps": -2}, "Steps must be an integer between 1 and 1000"),
    ({"steps": 1001}, "Steps must be an integer between 1 and 1000"),
    ({"steps": 2.5}, "Steps must be an integer"),
    ({"steps": "20"}, "Steps must be an integer"),
    ({"sampler": "euler"}, "Unknown sampler 'euler'; choose one of ddpm, ddim, dpmpp-2m."),
    ({"strength": 0.0}, "Strength must lie in (0, 1], got 0.0."),
    ({"strength": 1.5}, "Strength must lie in (0, 1]"),
    ({"strength": -0.1}, "Strength must lie in (0, 1]"),
    ({"strength": 0.5}, "A strength below 1 needs an init image to start from."),
    ({"eta": -1.0}, "Eta must be a number between 0 and 1 (DDIM's η), got -1.0."),
    ({"eta": 1.5}, "Eta must be a number between 0 and 1"),
    ({"eta": float("nan")}, "Eta must be a number between 0 and 1"),
    ({"ddpm_variance": "large"}, "Unknown DDPM variance 'large'; choose one of beta, beta-tilde."),
    ({"rng": 42}, "numpy.random.Generator"),
    ({"init_image": np.zeros((2, 3, 8, 8), np.float32)}, "init_image"),
    ({"init_image": np.full(SHAPE, 3.0, np.float32)}, "init_image"),
    ({"shape": (2, 0, 4, 4)}, "shape"),
]


@pytest.mark.parametrize("kw,words", BAD)
def test_bad_arguments_raise_usage_error_before_any_step(kw: dict, words: str) -> None:
    calls = []
    args = {"sampler": "ddim", "steps": 5, "rng": np.random.default_rng(0), "shape": SHAPE, **kw}
    shape = args.pop("shape")
    with pytest.raises(UsageError) as e:
        sample(lambda x, t: calls.append(1) or x, make_schedule("linear", 1000), shape, **args)
    msg = str(e.value)
    assert words in msg and "\n" not in msg and msg.endswith(".")
    assert not calls


def test_wrong_eps_shape_from_the_denoiser() -> None:
    gen = sample(lambda x, t: x[:, :1], make_schedule("linear", 1000), SHAPE, steps=3, rng=np.random.default_rng(0))
    with pytest.raises(UsageError, match="shape"):
        next(gen)
