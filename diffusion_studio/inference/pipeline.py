"""The generation pipeline: prompt -> text embeddings -> reverse diffusion on ONNX Runtime -> uint8 images.

This is what the GUI worker (`iterate`), the CLI and the tests (`generate`) call. Noise is
drawn on the CPU from `numpy.random.default_rng(seed)`; in a batch of N, image i uses
seed + i, so any image of a batch can be made again alone with its own seed.
"""

from __future__ import annotations

import math
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from diffusion_studio.core.bundle import MAX_GUIDANCE
from diffusion_studio.core.guidance import guided_eps_fn
from diffusion_studio.core.images import from_uint8, to_uint8
from diffusion_studio.core.sampler_steps import SamplerKind
from diffusion_studio.core.sampling import Step, sample
from diffusion_studio.errors import ModelOutputError, UsageError
from diffusion_studio.inference.providers import ProviderInfo
from diffusion_studio.inference.seeds import SEED_MAX, batch_rng, check_seed, random_seed
from diffusion_studio.inference.text import replace_undecodable

if TYPE_CHECKING:
    from diffusion_studio.inference.bundle_loader import LoadedBundle

BATCH_MAX = 64
SAMPLERS = tuple(kind.value for kind in SamplerKind)
# σ_t² of the DDPM sampler as users type it: β_t ("fixed large") or β̃_t ("fixed small", DDPM §3.2).
DDPM_VARIANCES = ("beta", "beta-tilde")


@dataclass(frozen=True)
class GenerationRequest:
    """What to generate. `None` for sampler/steps/guidance means the bundle's sampler_defaults;
    `seed=None` means a random seed, which is recorded in the result and the metadata.

    `preview`: whether `generate(on_step=...)` reports every step (True) or only the last.
    `init_image` (uint8 [H, W, C] or float [C, H, W] / [1, C, H, W] in [-1, 1]) with `strength`
    in (0, 1] starts from that image noised to a strength-derived t (SDEdit img2img).
    `eta` is DDIM's η in [0, 1] (eq. 16: 0 deterministic, 1 DDPM-like); `ddpm_variance` the
    DDPM sampler's σ_t² ("beta" or "beta-tilde"); `clip_x0` clips x̂_0 to [-1, 1] every step.
    """

    prompt: str
    negative_prompt: str = ""
    sampler: str | None = None
    steps: int | None = None
    guidance: float | None = None
    seed: int | None = None
    batch: int = 1
    preview: bool = True
    init_image: np.ndarray | None = None
    strength: float = 1.0
    eta: float = 0.0
    ddpm_variance: str = "beta"
    clip_x0: bool = True

    def validated(self, T: int) -> GenerationRequest:
        """A normalised copy checked against a schedule of T steps (defaults already filled in).

        Each bad field raises `UsageError` with one sentence. Prompts of any length and script
        are accepted; the tokenizer truncates long ones (a note, never an error). Undecodable
        bytes (lone surrogates, e.g. from a command line that is not UTF-8) become U+FFFD here,
        so the metadata records the text the model saw.
        """
        if not isinstance(self.prompt, str) or not isinstance(self.negative_prompt, str):
            raise UsageError("The prompt and the negative prompt must be text.")
        prompt, negative_prompt = replace_undecodable(self.prompt)[0], replace_undecodable(self.negative_prompt)[0]
        sampler = self.sampler.strip().lower() if isinstance(self.sampler, str) else self.sampler
        if sampler not in SAMPLERS:
            raise UsageError(f"Unknown sampler {self.sampler!r}; choose one of {', '.join(SAMPLERS)}.")
        steps = self.steps
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or not 1 <= steps <= T:
            raise UsageError(f"Steps must be an integer between 1 and {T} (the model's T), got {steps!r}.")
        w = self.guidance
        # MAX_GUIDANCE (core.bundle) is the one bound: beyond it images only saturate, and near
        # float32's range w (ε_c − ε_u) overflows.
        if (isinstance(w, bool) or not isinstance(w, (int, float, np.floating)) or not math.isfinite(w)
                or not 0.0 <= w <= MAX_GUIDANCE):
            raise UsageError(f"Guidance must be a number between 0 and {MAX_GUIDANCE:g}, got {w!r}.")
        batch = self.batch
        if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or not 1 <= batch <= BATCH_MAX:
            raise UsageError(f"Batch must be an integer between 1 and {BATCH_MAX}, got {batch!r}.")
        seed = check_seed(self.seed)
        if seed + int(batch) - 1 > SEED_MAX:
            raise UsageError(f"The seed plus the batch size must stay below {SEED_MAX}, got seed {seed}.")
        s = self.strength
        if isinstance(s, bool) or not isinstance(s, (int, float, np.floating)) or not 0.0 < s <= 1.0:
            raise UsageError(f"Strength must lie in (0, 1], got {s!r}.")
        if s < 1.0 and self.init_image is None:
            raise UsageError("A strength below 1 needs an init image to start from.")
        eta = self.eta
        if isinstance(eta, bool) or not isinstance(eta, (int, float, np.floating)) or not 0.0 <= eta <= 1.0:
            raise UsageError(f"Eta must be a number between 0 and 1 (DDIM's η), got {eta!r}.")
        variance = self.ddpm_variance
        variance = variance.strip().lower().replace("_", "-") if isinstance(variance, str) else None
        if variance not in DDPM_VARIANCES:
            raise UsageError(
                f"Unknown DDPM variance {self.ddpm_variance!r}; choose one of {', '.join(DDPM_VARIANCES)}."
            )
        if not isinstance(self.clip_x0, (bool, np.bool_)):
            raise UsageError(f"clip_x0 must be True or False, got {self.clip_x0!r}.")
        return replace(
            self, prompt=prompt, negative_prompt=negative_prompt, sampler=sampler, steps=int(steps),
            guidance=float(w), batch=int(batch), seed=seed, strength=float(s), eta=float(eta),
            ddpm_variance=variance, clip_x0=bool(self.clip_x0),
        )

    def resolved(self, sampler: str, steps: int, guidance: float, T: int) -> GenerationRequest:
        """Defaults filled in (a random seed drawn if none was given) and validated against T."""
        filled = replace(
            self,
            sampler=sampler if self.sampler is None else self.sampler,
            steps=steps if self.steps is None else self.steps,
            guidance=guidance if self.guidance is None else self.guidance,
            seed=random_seed() if self.seed is None else self.seed,
        )
        return filled.validated(T)


@dataclass
class GenerationResult:
    """Finished images and what is needed to make them again."""

    images: np.ndarray  # uint8 [N, H, W, C]
    metadata: list[dict[str, Any]]  # one dict per image, for core.png_meta
    seconds: float
    steps_per_s: float  # sampler steps per second (one batched network call each)
    provider: ProviderInfo
    request: GenerationRequest  # resolved: sampler, steps, guidance and seed filled in
    notes: list[str] = field(default_factory=list)  # e.g. "the prompt was truncated to 32 tokens"


class Pipeline:
    """Text encoder + ONNX U-Net + one sampling loop, bound to a loaded bundle."""

    def __init__(self, bundle: LoadedBundle) -> None:
        self.bundle = bundle
        self._uncond: tuple[np.ndarray, np.ndarray] | None = None  # embedding of "" (cached)
        self._stop = threading.Event()
        self.last_request: GenerationRequest | None = None  # resolved request of the latest run
        self.notes: list[str] = []  # notes of the latest run (prompt truncation)

    @property
    def provider_info(self) -> ProviderInfo:
        return self.bundle.provider_info

    def resolve(self, request: GenerationRequest) -> GenerationRequest:
        """The request with the bundle's defaults and a seed filled in, validated (UsageError if bad)."""
        b = self.bundle
        return request.resolved(b.default_sampler, b.default_steps, b.default_guidance, b.T)

    def _encode(self, prompt: str) -> tuple[np.ndarray, np.ndarray]:
        """context, mask for one prompt; the tokenizer's truncation warning becomes a note.

        Tokenizing again is cheap and makes the note appear on every run, also when the
        encoder answers from its cache.
        """
        encoder = self.bundle.text_encoder
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            encoder.tokenize([prompt])
            context, mask = encoder.encode([prompt])
        for message in dict.fromkeys(str(w.message) for w in caught):
            self.notes.append(message)
        return context, mask

    def unconditional(self) -> tuple[np.ndarray, np.ndarray]:
        """Embedding of the empty prompt "" (the unconditional input of guidance), computed once."""
        if self._uncond is None:
            self._uncond = self.bundle.text_encoder.encode([""])
        return self._uncond

    def _init_image(self, image: np.ndarray | None) -> np.ndarray | None:
        if image is None:
            return None
        array = np.asarray(image)
        c, s = self.bundle.channels, self.bundle.image_size
        if array.dtype == np.uint8:
            if array.shape != (s, s, c):
                raise UsageError(f"The init image must be {s}x{s} with {c} channels, got shape {array.shape}.")
            return from_uint8(array)
        if array.shape == (1, c, s, s):
            array = array[0]
        if array.shape != (c, s, s):
            raise UsageError(f"The init image must have shape ({c}, {s}, {s}), got {array.shape}.")
        return array.astype(np.float32)

    def iterate(
        self, request: GenerationRequest, should_stop: Callable[[], bool] | None = None
    ) -> Iterator[Step]:
        """Resolve and validate the request now, then yield a core `Step` after every sampler step.

        The resolved request (with its seed) is in `self.last_request` as soon as this returns.
        Raises `Cancelled` when `should_stop()` turns True or `cancel()` is called.
        """
        req = self.resolve(request)
        self._stop.clear()
        self.notes = []
        self.last_request = req
        context, mask = self._encode(req.prompt)
        if req.negative_prompt:  # the negative prompt takes the unconditional prompt's place
            uncond_context, uncond_mask = self._encode(req.negative_prompt)
        else:
            uncond_context, uncond_mask = self.unconditional()
        eps_fn = guided_eps_fn(self.bundle.denoiser, context, mask, uncond_context, uncond_mask, req.guidance)
        init = self._init_image(req.init_image)
        b = self.bundle
        if req.eta > 0 and req.sampler != SamplerKind.DDIM.value:
            self.notes.append(f"eta only changes the ddim sampler; {req.sampler} ignores it.")
        if req.ddpm_variance != "beta" and req.sampler != SamplerKind.DDPM.value:
            self.notes.append(f"the DDPM variance only changes the ddpm sampler; {req.sampler} ignores it.")

        def stop() -> bool:
            return self._stop.is_set() or (should_stop is not None and bool(should_stop()))

        return sample(
            eps_fn,
            b.schedule,
            (req.batch, b.channels, b.image_size, b.image_size),
            sampler=req.sampler,
            steps=req.steps,
            rng=batch_rng(req.seed, req.batch),
            clip_x0=req.clip_x0,
            eta=req.eta,
            ddpm_variance=req.ddpm_variance.replace("-", "_"),  # core's DdpmVariance spelling
            init_image=init,
            strength=req.strength,
            should_stop=stop,
        )

    def generate(
        self,
        request: GenerationRequest,
        should_stop: Callable[[], bool] | None = None,
        on_step: Callable[[Step], None] | None = None,
    ) -> GenerationResult:
        """Run the whole reverse process and decode the final x_0 to uint8 images with metadata."""
        start = time.perf_counter()
        last: Step | None = None
        steps = self.iterate(request, should_stop)
        req = self.last_request
        for step in steps:
            last = step
            if on_step is not None and (req.preview or step.index == step.count - 1):
                on_step(step)
        seconds = time.perf_counter() - start
        if last is None:  # pragma: no cover - validation guarantees at least one step
            raise RuntimeError("The sampler produced no steps.")
        x_0 = np.asarray(last.x_t, dtype=np.float32)
        if not np.all(np.isfinite(x_0)):
            raise ModelOutputError("The model produced NaN or infinite values, so there is no image.")
        images = to_uint8(x_0)
        metadata = [self.image_metadata(req, i, seconds) for i in range(req.batch)]
        return GenerationResult(
            images=images,
            metadata=metadata,
            seconds=seconds,
            steps_per_s=last.count / seconds if seconds > 0 else float("inf"),
            provider=self.provider_info,
            request=req,
            notes=list(self.notes),
        )

    def image_metadata(self, request: GenerationRequest, index: int, seconds: float) -> dict[str, Any]:
        """Settings that reproduce image `index` of a resolved request alone (its seed is seed + index)."""
        b, info = self.bundle, self.provider_info
        sampler = SamplerKind(request.sampler)
        return {
            "prompt": request.prompt,
            "negative_prompt": request.negative_prompt,
            "seed": int(request.seed) + index,
            "steps": int(request.steps),
            "sampler": sampler.value,
            "guidance": float(request.guidance),
            "model": b.name,
            "model_hash": b.model_hash,
            "provider": info.active,
            "onnxruntime": info.onnxruntime_version,
            "width": b.image_size,
            "height": b.image_size,
            "batch_size": int(request.batch),
            "batch_index": index,
            "seconds": round(seconds, 3),
            "clip_x0": bool(request.clip_x0),
            # sampler options only where they shape the image: η for DDIM, σ_t² for DDPM
            **({"eta": float(request.eta)} if sampler is SamplerKind.DDIM else {}),
            **({"ddpm_variance": request.ddpm_variance} if sampler is SamplerKind.DDPM else {}),
            **({"strength": float(request.strength)} if request.init_image is not None else {}),
        }

    def cancel(self) -> None:
        """Stop before the next step and terminate the network call in flight (thread-safe)."""
        self._stop.set()
        self.bundle.denoiser.cancel()
