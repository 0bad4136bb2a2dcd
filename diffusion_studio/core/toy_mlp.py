"""A small ε-prediction MLP for 2D points in numpy: forward pass, hand-written backprop, Adam.

    ε_θ(x_t, t) = W_L · σ(… σ(W_1 [x_t, emb(t)] + b_1) …) + b_L,   σ = SiLU (x · sigmoid(x))

emb(t) is a sinusoidal embedding of s = t/T: [sin(ω_k s), cos(ω_k s)] with frequencies ω_k
spaced geometrically from 1 to `MAX_FREQUENCY` (Vaswani et al. 2017, as DDPM embeds t).
Training is DDPM Algorithm 1 (`ToyTrainer.step`): x_0 from the data, t ~ Uniform{1, …, T},
ε ~ N(0, I), a gradient step on the simplified loss (eq. 14)

    L = mean ‖ε − ε_θ(√ᾱ_t x_0 + √(1 − ᾱ_t) ε, t)‖²

with Adam (Kingma & Ba 2015). Float32 trains a 3 × 128 network for a thousand steps in a few
seconds on one CPU core; float64 is there for the gradient check. No torch: the GUI process
runs this in a worker thread.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from diffusion_studio.core.schedule import Schedule
from diffusion_studio.errors import UsageError

__all__ = ["Adam", "MAX_FREQUENCY", "MlpConfig", "ToyMlp", "ToyTrainer", "time_embedding"]

MAX_FREQUENCY = 200.0
Array = npt.NDArray[np.floating]


@dataclass(frozen=True)
class MlpConfig:
    hidden: tuple[int, ...] = (128, 128, 128)
    time_features: int = 16  # sin and cos of time_features/2 frequencies


def time_embedding(t: npt.ArrayLike, T: int, features: int, dtype: npt.DTypeLike = np.float32) -> Array:
    """[N, features]: sin and cos of ω_k · t/T, ω_k geometric in [1, MAX_FREQUENCY]."""
    half = features // 2
    omega = np.geomspace(1.0, MAX_FREQUENCY, half) if half > 1 else np.ones(1)
    angle = (np.asarray(t, dtype=np.float64).reshape(-1, 1) / T) * omega
    embedding: Array = np.concatenate([np.sin(angle), np.cos(angle)], axis=1).astype(dtype)
    return embedding


def _silu(z: Array) -> tuple[Array, Array]:
    """SiLU(z) = z · sigmoid(z) and the sigmoid (kept for the backward pass)."""
    sig = 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))
    return z * sig, sig


class ToyMlp:
    """ε_θ for 2D points: input [x, y, emb(t)], hidden SiLU layers, output ε̂ [N, 2].

    `params` is the flat list [W_1, b_1, …, W_L, b_L] (W: [fan_in, fan_out]); the trainer
    updates it in place.
    """

    def __init__(self, params: list[Array], config: MlpConfig, T: int) -> None:
        self.params = params
        self.config = config
        self.T = int(T)
        self._table: Array | None = None  # emb(t) for t = 0…T, made on first use

    @classmethod
    def create(cls, config: MlpConfig, T: int, seed: int = 0, dtype: npt.DTypeLike = np.float32) -> ToyMlp:
        """Weights uniform in ±√(6/(fan_in + fan_out)) (Glorot), biases 0; the same for the same seed."""
        if T < 1 or not config.hidden or min(config.hidden) < 1 or config.time_features < 2:
            raise UsageError("The MLP needs T ≥ 1, at least one hidden layer and two time features.")
        rng = np.random.default_rng([int(seed), 0x31])
        sizes = (2 + 2 * (config.time_features // 2), *config.hidden, 2)
        params: list[Array] = []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            params.append(rng.uniform(-bound, bound, (fan_in, fan_out)).astype(dtype))
            params.append(np.zeros(fan_out, dtype=dtype))
        return cls(params, config, T)

    @property
    def dtype(self) -> np.dtype[np.floating]:
        return self.params[0].dtype

    @property
    def parameter_count(self) -> int:
        return int(sum(p.size for p in self.params))

    def copy(self) -> ToyMlp:
        return ToyMlp([p.copy() for p in self.params], self.config, self.T)

    def _inputs(self, x: npt.ArrayLike, t: npt.ArrayLike) -> Array:
        points = np.asarray(x, dtype=self.dtype).reshape(-1, 2)
        steps = np.broadcast_to(np.asarray(t), (points.shape[0],))
        if steps.dtype.kind in "iu" and (steps.size == 0 or (steps.min() >= 0 and steps.max() <= self.T)):
            if self._table is None or self._table.dtype != self.dtype:
                self._table = time_embedding(np.arange(self.T + 1), self.T, self.config.time_features, self.dtype)
            emb = self._table[steps]
        else:
            emb = time_embedding(steps, self.T, self.config.time_features, self.dtype)
        return np.concatenate([points, emb], axis=1)

    def __call__(self, x: npt.ArrayLike, t: npt.ArrayLike) -> npt.NDArray[np.float32]:
        """ε̂ = ε_θ(x_t, t) as float32 [N, 2] (the sampling loop's `eps_fn`)."""
        h = self._inputs(x, t)
        layers = len(self.params) // 2
        for i in range(layers):
            h = h @ self.params[2 * i] + self.params[2 * i + 1]
            if i < layers - 1:
                h = _silu(h)[0]
        return h.astype(np.float32, copy=False)

    def loss_and_grads(self, x: npt.ArrayLike, t: npt.ArrayLike, target: npt.ArrayLike) -> tuple[float, list[Array]]:
        """The mean squared error ⟨(ε̂ − ε)²⟩ over the batch and both coordinates, and its gradient
        with respect to every parameter (backprop by hand through the affine and SiLU layers)."""
        h = self._inputs(x, t)
        eps = np.asarray(target, dtype=self.dtype).reshape(h.shape[0], 2)
        layers = len(self.params) // 2
        inputs: list[Array] = []  # the input of each affine layer
        pre: list[Array] = []  # z = h W + b of each hidden layer
        sigmoids: list[Array] = []
        for i in range(layers):
            inputs.append(h)
            z = h @ self.params[2 * i] + self.params[2 * i + 1]
            if i < layers - 1:
                h, sig = _silu(z)
                pre.append(z)
                sigmoids.append(sig)
            else:
                h = z
        diff = h - eps
        loss = float(np.mean(diff * diff))
        grad: Array = diff * (2.0 / diff.size)  # ∂L/∂ε̂
        grads: list[Array] = [np.empty(0)] * len(self.params)
        for i in reversed(range(layers)):
            grads[2 * i] = inputs[i].T @ grad
            grads[2 * i + 1] = grad.sum(axis=0)
            if i > 0:
                grad = grad @ self.params[2 * i].T
                zi, si = pre[i - 1], sigmoids[i - 1]
                grad = grad * (si * (1.0 + zi * (1.0 - si)))  # SiLU'(z) = σ(z)(1 + z(1 − σ(z)))
        return loss, grads


class Adam:
    """Adam with bias correction (Kingma & Ba 2015, Algorithm 1), updating arrays in place."""

    def __init__(self, params: list[Array], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        self.params = params
        self.lr = lr
        self.beta1, self.beta2 = betas
        self.eps = eps
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]
        self.t = 0

    def step(self, grads: list[Array], lr: float | None = None) -> None:
        self.t += 1
        rate = self.lr if lr is None else lr
        c1, c2 = 1.0 - self.beta1**self.t, 1.0 - self.beta2**self.t
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            m *= self.beta1
            m += (1.0 - self.beta1) * g
            v *= self.beta2
            v += (1.0 - self.beta2) * (g * g)
            p -= (rate / c1) * m / (np.sqrt(v / c2) + self.eps)


class ToyTrainer:
    """DDPM Algorithm 1 on a 2D point cloud: `step()` draws a batch and takes one Adam step.

    The learning rate decays on a cosine from `lr` to `lr`/10 over `steps` (after which it
    stays there); the batches, timesteps and noise come from one generator seeded by `seed`.
    `ema_model()` is the model with an exponential moving average of the weights (decay
    `ema_decay`, warmed up as min(decay, (1 + k)/(10 + k)) after k steps), which samples
    better than the last weights after a short run at a high learning rate.
    """

    def __init__(self, model: ToyMlp, data: npt.ArrayLike, schedule: Schedule, *, steps: int,
                 batch_size: int = 256, lr: float = 1e-2, seed: int = 0, ema_decay: float = 0.99) -> None:
        points = np.asarray(data, dtype=model.dtype)
        if points.ndim != 2 or points.shape[1] != 2 or points.shape[0] == 0:
            raise UsageError("Training needs a non-empty point cloud [N, 2].")
        if schedule.T != model.T:
            raise UsageError(f"The schedule has T = {schedule.T} but the model was made for T = {model.T}.")
        if steps < 1 or batch_size < 1:
            raise UsageError("Training needs at least one step and a batch of at least one point.")
        self.model, self.data, self.schedule = model, points, schedule
        self.steps, self.batch_size, self.lr = int(steps), int(batch_size), float(lr)
        self.optimizer = Adam(model.params, lr)
        self.rng = np.random.default_rng([int(seed), 0x32])
        self.step_count = 0
        self.ema_decay = float(ema_decay)
        self.ema_params = [p.copy() for p in model.params]

    def ema_model(self) -> ToyMlp:
        """A copy of the model with the averaged weights."""
        return ToyMlp([p.copy() for p in self.ema_params], self.model.config, self.model.T)

    def learning_rate(self) -> float:
        progress = min(1.0, self.step_count / self.steps)
        return self.lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))

    def step(self) -> float:
        """One step of Algorithm 1; returns the batch loss before the update."""
        rng, dtype = self.rng, self.model.dtype
        x0 = self.data[rng.integers(0, self.data.shape[0], self.batch_size)]
        t = rng.integers(1, self.schedule.T + 1, self.batch_size)
        eps = rng.standard_normal((self.batch_size, 2)).astype(dtype)
        a = self.schedule.sqrt_alphas_cumprod[t - 1].astype(dtype)[:, None]
        s = self.schedule.sqrt_one_minus_alphas_cumprod[t - 1].astype(dtype)[:, None]
        x_t = a * x0 + s * eps  # eq. 4
        loss, grads = self.model.loss_and_grads(x_t, t, eps)
        self.optimizer.step(grads, self.learning_rate())
        self.step_count += 1
        decay = min(self.ema_decay, (1.0 + self.step_count) / (10.0 + self.step_count))
        for avg, p in zip(self.ema_params, self.model.params):
            avg *= decay
            avg += (1.0 - decay) * p
        return loss
