"""core.toy_mlp: backprop against finite differences, Adam, Algorithm 1 training, and sampling the
trained MLP through the image samplers (core.sampling_loop.sample) on 2D points."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import numpy as np
import pytest

from diffusion_studio.core.sampling_loop import sample
from diffusion_studio.core.schedule import make_schedule
from diffusion_studio.core.sliced_wasserstein import sliced_wasserstein
from diffusion_studio.core.toy_data import make_dataset
from diffusion_studio.core.toy_mlp import Adam, MlpConfig, ToyMlp, ToyTrainer, time_embedding
from diffusion_studio.errors import UsageError


@contextlib.contextmanager
def _one_blas_thread() -> Iterator[None]:
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def test_backprop_matches_finite_differences_in_float64() -> None:
    model = ToyMlp.create(MlpConfig(hidden=(16, 12), time_features=6), T=50, seed=1, dtype=np.float64)
    rng = np.random.default_rng(0)
    x, t, target = rng.normal(size=(9, 2)), rng.integers(1, 51, 9), rng.normal(size=(9, 2))
    # biases start at 0; move them so that their gradients are generic too
    for p in model.params[1::2]:
        p += rng.normal(scale=0.3, size=p.shape)
    loss, grads = model.loss_and_grads(x, t, target)
    assert loss == pytest.approx(np.mean((model(x, t).astype(np.float64) - target) ** 2), rel=1e-6)
    h = 1e-6
    for p, g in zip(model.params, grads):
        assert g.shape == p.shape
        numeric = np.zeros_like(p)
        for i in np.ndindex(p.shape):
            keep = p[i]
            p[i] = keep + h
            up = model.loss_and_grads(x, t, target)[0]
            p[i] = keep - h
            down = model.loss_and_grads(x, t, target)[0]
            p[i] = keep
            numeric[i] = (up - down) / (2 * h)
        rel = np.linalg.norm(g - numeric) / max(np.linalg.norm(numeric), 1e-12)
        assert rel < 1e-4, rel


def test_time_embedding_is_sin_and_cos_of_t_over_T() -> None:
    emb = time_embedding([0, 500, 1000], T=1000, features=8, dtype=np.float64)
    assert emb.shape == (3, 8)
    assert np.allclose(emb[0], [0, 0, 0, 0, 1, 1, 1, 1])
    assert np.allclose(emb[:, 0], np.sin([0.0, 0.5, 1.0]))  # the lowest frequency is 1
    assert np.allclose(emb[:, :4] ** 2 + emb[:, 4:] ** 2, 1.0)


def test_adam_first_step_moves_each_weight_by_the_learning_rate() -> None:
    p = [np.array([1.0, -2.0, 3.0])]
    Adam(p, lr=0.1).step([np.array([0.5, -4.0, 1e-3])])
    assert np.allclose(p[0], [0.9, -1.9, 2.9], atol=1e-5)  # bias-corrected: m̂/√v̂ = sign(g)


def test_create_is_seeded_and_sized() -> None:
    a = ToyMlp.create(MlpConfig(hidden=(128, 128)), T=1000, seed=3)
    assert a.parameter_count == (18 * 128 + 128) + (128 * 128 + 128) + (128 * 2 + 2)
    b = ToyMlp.create(MlpConfig(hidden=(128, 128)), T=1000, seed=3)
    assert all(np.array_equal(p, q) for p, q in zip(a.params, b.params))
    out = a(np.zeros((5, 2)), np.arange(1, 6))
    assert out.shape == (5, 2) and out.dtype == np.float32
    # integer t reads a precomputed emb(t) table; any other t computes it: the same numbers
    assert np.allclose(out, a(np.zeros((5, 2)), np.arange(1.0, 6.0)), atol=1e-6)


def test_training_fits_the_noise_and_sampling_recovers_the_data() -> None:
    """A thousand steps of Algorithm 1 on two moons; DDPM, DDIM and DPM-Solver++ then land near the data."""
    schedule = make_schedule("linear", 1000)
    data = make_dataset("moons", 2000, seed=0)
    model = ToyMlp.create(MlpConfig(), schedule.T, seed=0)
    trainer = ToyTrainer(model, data, schedule, steps=1000, seed=0)
    start = time.perf_counter()
    with _one_blas_thread():  # as the GUI's worker does: OpenBLAS threads only slow these small products
        losses = [trainer.step() for _ in range(1000)]
    elapsed = time.perf_counter() - start
    ema = trainer.ema_model()
    assert np.mean(losses[-100:]) < 0.7 * np.mean(losses[:20])  # the ε loss falls (it starts near 1)
    reference = make_dataset("moons", 1000, seed=1)
    for sampler, steps in (("ddpm", 100), ("ddim", 20), ("dpmpp-2m", 20)):
        runs = list(sample(eps_fn=ema, schedule=schedule, shape=(1000, 2), sampler=sampler, steps=steps,
                           rng=np.random.default_rng(1), clip_x0=False))
        assert len(runs) == steps and runs[-1].t_prev == 0
        x_T = np.random.default_rng(1).standard_normal((1000, 2), dtype=np.float32)  # sample()'s first draw
        sw, sw_noise = sliced_wasserstein(runs[-1].x_prev, reference), sliced_wasserstein(x_T, reference)
        assert sw < 0.5 * sw_noise, (sampler, sw, sw_noise)
    print(f"1000 steps in {elapsed:.1f} s")


def test_trainer_is_deterministic_and_checks_its_input() -> None:
    schedule = make_schedule("linear", 100)
    data = make_dataset("gaussians", 256, 0)

    def run() -> list[float]:
        model = ToyMlp.create(MlpConfig(hidden=(32,)), 100, seed=2)
        trainer = ToyTrainer(model, data, schedule, steps=5, batch_size=64, seed=4)
        return [trainer.step() for _ in range(5)]

    assert run() == run()
    model = ToyMlp.create(MlpConfig(hidden=(32,)), 100)
    with pytest.raises(UsageError, match="non-empty point cloud"):
        ToyTrainer(model, np.zeros((0, 2)), schedule, steps=5)
    with pytest.raises(UsageError, match="T = 1000"):
        ToyTrainer(model, data, make_schedule("linear", 1000), steps=5)
    with pytest.raises(UsageError):
        ToyMlp.create(MlpConfig(hidden=()), 100)
