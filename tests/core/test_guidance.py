import numpy as np
import pytest

from diffusion_studio.core.guidance import combine_guidance, guided_eps_fn
from diffusion_studio.core.sampling_loop import sample
from diffusion_studio.core.schedule import make_schedule
from diffusion_studio.errors import UsageError

L, D = 5, 4


class RecordingDenoiser:
    """ε depends on x, t and the context, so conditional and unconditional rows differ."""

    def __init__(self) -> None:
        self.calls: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []

    @staticmethod
    def eps(x, t, context, mask):
        pooled = (context * mask[:, :, None]).sum(axis=(1, 2)) / np.maximum(mask.sum(axis=1), 1)
        return (0.5 * x + pooled[:, None, None, None] + 1e-4 * t[:, None, None, None]).astype(np.float32)

    def __call__(self, x, t, context, context_mask):
        self.calls.append((x.copy(), t.copy(), np.array(context), np.array(context_mask)))
        return self.eps(x, t, context, context_mask)


def contexts(n_cond: int = 2):
    rng = np.random.default_rng(0)
    cond = rng.standard_normal((n_cond, L, D)).astype(np.float32)
    cmask = np.ones((n_cond, L), np.float32)
    cmask[:, 3:] = 0
    unc = rng.standard_normal((1, L, D)).astype(np.float32)
    umask = np.zeros((1, L), np.float32)
    umask[:, :2] = 1
    return cond, cmask, unc, umask


def test_one_batched_call_and_the_formula() -> None:
    cond, cmask, unc, umask = contexts()
    den = RecordingDenoiser()
    fn = guided_eps_fn(den, cond, cmask, unc, umask, 3.0)
    x = np.random.default_rng(1).standard_normal((2, 3, 2, 2)).astype(np.float32)
    t = np.array([700, 700], np.int64)
    got = fn(x, t)
    assert len(den.calls) == 1
    bx, bt, bc, bm = den.calls[0]
    assert bx.shape == (4, 3, 2, 2) and bt.tolist() == [700] * 4
    np.testing.assert_array_equal(bc[:2], np.repeat(unc, 2, axis=0))  # rows 0..N-1: unconditional
    np.testing.assert_array_equal(bc[2:], cond)
    np.testing.assert_array_equal(bm[:2], np.repeat(umask, 2, axis=0))
    e_u = RecordingDenoiser.eps(x, t, np.repeat(unc, 2, axis=0), np.repeat(umask, 2, axis=0))
    e_c = RecordingDenoiser.eps(x, t, cond, cmask)
    np.testing.assert_allclose(got, e_u + 3.0 * (e_c - e_u), rtol=1e-6, atol=1e-6)
    assert np.abs(e_c - e_u).max() > 0.1  # the halves really differ


def test_w0_is_unconditional_and_w1_conditional_with_half_the_batch() -> None:
    cond, cmask, unc, umask = contexts()
    x = np.ones((2, 1, 2, 2), np.float32)
    t = np.array([10, 10])
    for w, ctx, msk in ((0.0, np.repeat(unc, 2, 0), np.repeat(umask, 2, 0)), (1.0, cond, cmask)):
        den = RecordingDenoiser()
        got = guided_eps_fn(den, cond, cmask, unc, umask, w)(x, t)
        assert len(den.calls) == 1 and den.calls[0][0].shape[0] == 2
        np.testing.assert_array_equal(got, RecordingDenoiser.eps(x, t, ctx, msk))


def test_batch_one_context_is_repeated_and_mismatch_is_an_error() -> None:
    cond, cmask, unc, umask = contexts(n_cond=1)
    den = RecordingDenoiser()
    guided_eps_fn(den, cond, cmask, unc, umask, 2.0)(np.zeros((3, 1, 2, 2), np.float32), np.full(3, 5))
    assert den.calls[0][2].shape == (6, L, D)
    cond3, cmask3, _, _ = contexts(n_cond=3)
    with pytest.raises(UsageError, match="batch size 3"):
        guided_eps_fn(den, cond3, cmask3, unc, umask, 2.0)(np.zeros((2, 1, 2, 2), np.float32), np.full(2, 5))


def test_guided_sampling_makes_one_call_per_step() -> None:
    cond, cmask, unc, umask = contexts()
    den = RecordingDenoiser()
    fn = guided_eps_fn(den, cond, cmask, unc, umask, 4.0)
    steps = list(sample(fn, make_schedule("linear", 1000), (2, 1, 2, 2), steps=5, rng=np.random.default_rng(0)))
    assert len(steps) == 5 and len(den.calls) == 5
    assert all(c[0].shape[0] == 4 for c in den.calls)


def test_combine_guidance() -> None:
    eu, ec = np.array([1.0, -2.0], np.float32), np.array([2.0, 0.0], np.float32)
    np.testing.assert_array_equal(combine_guidance(eu, ec, 0.0), eu)
    np.testing.assert_array_equal(combine_guidance(eu, ec, 1.0), ec)
    np.testing.assert_array_equal(combine_guidance(eu, ec, 2.5), np.array([3.5, 3.0], np.float32))


@pytest.mark.parametrize("w", [-0.5, float("nan"), float("inf"), "3", True])
def test_bad_guidance_scale(w) -> None:
    cond, cmask, unc, umask = contexts()
    with pytest.raises(UsageError, match="Guidance must be a number between 0 and 100"):
        guided_eps_fn(RecordingDenoiser(), cond, cmask, unc, umask, w)


def test_bad_contexts() -> None:
    cond, cmask, unc, umask = contexts()
    den = RecordingDenoiser()
    with pytest.raises(UsageError, match=r"\[N, L, D\]"):
        guided_eps_fn(den, cond[0], cmask, unc, umask, 2.0)
    with pytest.raises(UsageError, match="mask"):
        guided_eps_fn(den, cond, cmask[:, :3], unc, umask, 2.0)
    with pytest.raises(UsageError, match="agree"):
        guided_eps_fn(den, cond, cmask, unc[:, :3], umask[:, :3], 2.0)
