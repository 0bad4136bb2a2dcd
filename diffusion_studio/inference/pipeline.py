"""The generation pipeline: condition -> reverse diffusion on ONNX Runtime -> uint8 images.

This is what the GUI worker (`iterate`), the CLI and the tests (`generate`) call. Noise is
drawn on the CPU from `numpy.random.default_rng(seed)`; in a batch of N, image i uses
seed + i, so any image of a batch can be made again alone with its own seed.

The bundle's conditioning kind (model.json format 2) decides what conditions the network:
text (prompt embeddings, classifier-free guidance), class (one class label for the batch, no
guidance) or none (unconditional: only x_t and t). The bundle's prediction kind (ε, v, x_0),
variance (fixed_large, fixed_small, learned_range) and clip_sample(+range) go into the
sampler, so an imported diffusers model samples as its own scheduler would.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from diffusion_studio.core.bundle import ConditioningKind
from diffusion_studio.core.guidance import guided_eps_fn
from diffusion_studio.core.images import from_uint8, to_uint8
from diffusion_studio.core.params import (
    SamplerKind,
    check_batch,
    check_eta,
    check_guidance,
    check_seed,
    check_steps,
    check_strength,
    parse_ddpm_variance,
    parse_sampler,
    random_seed,
)
from diffusion_studio.core.prediction import VarianceKind
from diffusion_studio.core.sampling_loop import EpsFn, Step, ddpm_variance_for, run_to_end, sample
from diffusion_studio.errors import UsageError
from diffusion_studio.inference.providers import ProviderInfo
from diffusion_studio.inference.seeds import batch_rng
from diffusion_studio.inference.text_encoder import TextEncoder, replace_undecodable

if TYPE_CHECKING:
    from diffusion_studio.inference.bundle_loader import LoadedBundle


@dataclass(frozen=True)
class GenerationRequest:
    """What to generate. `None` for sampler/steps/guidance means the bundle's sampler_defaults;
    `seed=None` means a random seed, which is recorded in the result and the metadata.

    `prompt` is one prompt for the whole batch, or a sequence of `batch` prompts (image i
    gets prompt i, with seed + i as always). `preview`: whether `generate(on_step=...)`
    reports every step (True) or only the last. `init_image` (uint8 [H, W, C] or float
    [C, H, W] / [1, C, H, W] in [-1, 1]) with `strength` in (0, 1] starts from that image
    noised to a strength-derived t (SDEdit img2img). `eta` is DDIM's η (eq. 16: 0
    deterministic, 1 DDPM-like); `ddpm_variance` the DDPM sampler's σ_t² ("beta" or
    "beta-tilde"; None: the bundle's variance, β̃ for fixed_small, β otherwise; unused with a
    learned variance); `clip_x0` clips x̂_0 to the bundle's clip range every step (None: the
    bundle's clip_sample). `class_label` picks the class of a class-conditional bundle, by index
    0..num_classes−1 or by one of its class names (resolved to the index). Ranges and messages:
    `core.params`. Models that take no text ignore the prompt, negative prompt and guidance.
    """

    prompt: str | Sequence[str] = ""
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
    ddpm_variance: str | None = None
    clip_x0: bool | None = None
    class_label: int | str | None = None
    width: int | None = None  # pixels; None: the model's size (a pixel bundle has only its own size)
    height: int | None = None

    def prompt_of(self, index: int) -> str:
        """The prompt of image `index` of the batch."""
        return self.prompt if isinstance(self.prompt, str) else self.prompt[index]

    def validated(self, T: int) -> GenerationRequest:
        """A normalised copy checked against a schedule of T steps (defaults already filled in).

        Each bad field raises `UsageError` with one sentence (the `core.params` checks). Prompts
        of any length and script are accepted; the tokenizer truncates long ones (a note, never
        an error). Undecodable bytes (lone surrogates, e.g. from a command line that is not
        UTF-8) become U+FFFD here, so the metadata records the text the model saw.
        """
        prompts = [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)
        if not all(isinstance(p, str) for p in (*prompts, self.negative_prompt)) or not prompts:
            raise UsageError("The prompt and the negative prompt must be text.")
        batch = check_batch(self.batch)
        if not isinstance(self.prompt, str) and len(prompts) != batch:
            raise UsageError(f"Give one prompt or one prompt per image ({batch}), got {len(prompts)} prompts.")
        fixed = [replace_undecodable(p)[0] for p in prompts]
        if self.clip_x0 is not None and not isinstance(self.clip_x0, (bool, np.bool_)):
            raise UsageError(f"clip_x0 must be True or False, got {self.clip_x0!r}.")
        return replace(
            self,
            prompt=fixed[0] if isinstance(self.prompt, str) else tuple(fixed),
            negative_prompt=replace_undecodable(self.negative_prompt)[0],
            sampler=parse_sampler(self.sampler).value,
            steps=check_steps(self.steps, T),
            guidance=check_guidance(self.guidance),
            batch=batch,
            seed=check_seed(self.seed, batch),
            strength=check_strength(self.strength, has_init_image=self.init_image is not None),
            eta=check_eta(self.eta),
            ddpm_variance=None if self.ddpm_variance is None else parse_ddpm_variance(self.ddpm_variance).value,
            clip_x0=True if self.clip_x0 is None else bool(self.clip_x0),
        )


NO_GUIDANCE = 1.0  # w = 1: ε̂ = ε_c, the model's own output (class and unconditional models have no guidance)
UNCONDITIONAL_NOTE = "This model is unconditional: the prompt, negative prompt and guidance are not used."
CLASS_NOTE = "This model is class-conditional: the prompt, negative prompt and guidance are not used."


def _names_text(names: Sequence[str], shown: int = 6) -> str:
    return ", ".join(names[:shown]) + (", …" if len(names) > shown else "")


def _ignored_note(kind: ConditioningKind, request: GenerationRequest) -> str | None:
    """One note when a model without text conditioning was given a prompt, negative prompt or guidance."""
    if kind is ConditioningKind.TEXT:
        return None
    prompts = [request.prompt] if isinstance(request.prompt, str) else list(request.prompt)
    given = any(str(p).strip() for p in (*prompts, request.negative_prompt)) or request.guidance is not None
    if not given:
        return None
    return UNCONDITIONAL_NOTE if kind is ConditioningKind.NONE else CLASS_NOTE


def _resolved_fields(request: GenerationRequest) -> tuple[str, int, float, int]:
    """sampler, steps, guidance and seed of a resolved request (`Pipeline.resolve` fills them all in)."""
    if request.sampler is None or request.steps is None or request.guidance is None or request.seed is None:
        raise ValueError("the request is not resolved: sampler, steps, guidance and seed are needed")
    return request.sampler, request.steps, request.guidance, request.seed


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


@dataclass
class SamplingRun:
    """What `Pipeline.iterate` returns: the resolved request, its notes, and the steps to come.

    `steps` is the core `sample()` generator: nothing has run yet when `iterate` returns.
    """

    request: GenerationRequest  # resolved: defaults and a seed filled in, validated
    notes: list[str]  # e.g. the prompt was truncated; the sampler ignores eta
    steps: Iterator[Step]


class Pipeline:
    """Text encoder + ONNX U-Net + one sampling loop, bound to a loaded bundle."""

    def __init__(self, bundle: LoadedBundle) -> None:
        self.bundle = bundle
        self._uncond: tuple[np.ndarray, np.ndarray] | None = None  # embedding of "" (cached)
        self._stop = threading.Event()

    @property
    def provider_info(self) -> ProviderInfo:
        return self.bundle.provider_info

    def resolve(self, request: GenerationRequest) -> GenerationRequest:
        """The request with the bundle's defaults and a seed filled in, validated (UsageError if bad).

        A model without text conditioning gets no prompt and no guidance: the resolved prompt and
        negative prompt are "" and guidance is 1 (the model's own output, ε̂ = ε_c). A class
        model's class label becomes its index (UsageError, one sentence, when missing or unknown).
        """
        b = self.bundle
        text = b.conditioning_kind is ConditioningKind.TEXT
        guidance = b.default_guidance if request.guidance is None else request.guidance
        filled = replace(
            request,
            prompt=request.prompt if text else "",
            negative_prompt=request.negative_prompt if text else "",
            sampler=b.default_sampler if request.sampler is None else request.sampler,
            steps=b.default_steps if request.steps is None else request.steps,
            guidance=guidance if text else NO_GUIDANCE,
            seed=random_seed() if request.seed is None else request.seed,
            ddpm_variance=self._ddpm_variance(request.ddpm_variance),
            clip_x0=b.spec.diffusion.clip_sample if request.clip_x0 is None else request.clip_x0,
            class_label=self.class_index(request.class_label),
        )
        return filled.validated(b.T)

    def _ddpm_variance(self, chosen: str | None) -> str | None:
        """The user's DDPM σ_t², else the bundle's (β̃ for fixed_small, β for fixed_large); None when learned."""
        if chosen is not None:
            return chosen
        fixed = ddpm_variance_for(self.bundle.variance)
        return None if fixed is None else fixed.value

    def class_index(self, label: object) -> int | None:
        """The class index for a label (an index 0..num_classes−1, its digits, or a class name).

        None for a model that is not class-conditional and no label; UsageError (one sentence)
        for a label such a model cannot take, or a class model without one.
        """
        b = self.bundle
        if b.conditioning_kind is not ConditioningKind.CLASS:
            if label is None:
                return None
            raise UsageError(f"The model {b.name} is not class-conditional, so it takes no class label.")
        n, names = b.num_classes or 0, b.class_names or ()
        choices = f"0..{n - 1}" + (f" or a name ({_names_text(names)})" if names else "")
        if label is None:
            raise UsageError(f"The model {b.name} is class-conditional: choose a class, {choices}.")
        if isinstance(label, (int, np.integer)) and not isinstance(label, bool):
            index = int(label)
        elif isinstance(label, str) and label.strip().isdigit():
            index = int(label.strip())
        elif isinstance(label, str):
            lowered = [name.lower() for name in names]
            key = label.strip().lower()
            if key not in lowered:
                raise UsageError(f"The model {b.name} has no class {label!r}; choose {choices}.")
            return lowered.index(key)
        else:
            raise UsageError(f"A class label must be a number or a class name, got {label!r}.")
        if not 0 <= index < n:
            raise UsageError(f"The class {index} is out of range for the model {b.name}; choose {choices}.")
        return index

    def _encode(self, prompts: Sequence[str], notes: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """context, mask for the prompts; the tokenizer's truncation warnings become notes.

        Tokenizing again is cheap and makes the note appear on every run, also when the
        encoder answers from its cache.
        """
        encoder = self._text_encoder()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            encoder.tokenize(list(prompts))
            context, mask = encoder.encode(list(prompts))
        notes.extend(dict.fromkeys(str(w.message) for w in caught))
        return context, mask

    def unconditional(self) -> tuple[np.ndarray, np.ndarray]:
        """Embedding of the empty prompt "" (the unconditional input of guidance), computed once."""
        if self._uncond is None:
            self._uncond = self._text_encoder().encode([""])
        return self._uncond

    def _text_encoder(self) -> TextEncoder:
        encoder = self.bundle.text_encoder
        if encoder is None:  # a class-conditional or unconditional bundle (model.json format 2)
            raise UsageError(f"The model {self.bundle.name} takes no prompt (conditioning "
                             f"{self.bundle.conditioning_kind.value}).")
        return encoder

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

    def iterate(self, request: GenerationRequest, should_stop: Callable[[], bool] | None = None) -> SamplingRun:
        """Resolve the request (once) and encode its prompts now; the run's steps yield a core `Step` each.

        Bad requests raise `UsageError` here, before any step. Iterating `run.steps` raises
        `Cancelled` when `should_stop()` turns True or `cancel()` is called.
        """
        req = self.resolve(request)
        sampler, n_steps, _guidance, seed = _resolved_fields(req)
        self._stop.clear()
        notes: list[str] = []
        b = self.bundle
        eps_fn = self._eps_fn(req, notes)
        ignored = _ignored_note(b.conditioning_kind, request)
        if ignored:
            notes.append(ignored)
        init = self._init_image(req.init_image)
        if req.eta > 0 and sampler != SamplerKind.DDIM.value:
            notes.append(f"eta only changes the ddim sampler; {sampler} ignores it.")
        if request.ddpm_variance is not None and req.ddpm_variance != self._ddpm_variance(None):
            if sampler != SamplerKind.DDPM.value:
                notes.append(f"the DDPM variance only changes the ddpm sampler; {sampler} ignores it.")
            elif b.variance is VarianceKind.LEARNED_RANGE:
                notes.append("this model learns its variance (learned_range), so the DDPM variance is not used.")

        def stop() -> bool:
            return self._stop.is_set() or (should_stop is not None and bool(should_stop()))

        steps = sample(
            eps_fn,
            b.schedule,
            (req.batch, b.channels, b.image_size, b.image_size),
            sampler=sampler,
            steps=n_steps,
            rng=batch_rng(seed, req.batch),
            clip_x0=bool(req.clip_x0),
            eta=req.eta,
            ddpm_variance=req.ddpm_variance,
            init_image=init,
            strength=req.strength,
            should_stop=stop,
            prediction=b.prediction,
            variance=b.variance,
            clip_range=b.spec.diffusion.clip_sample_range,
        )
        return SamplingRun(req, notes, steps)

    def _eps_fn(self, req: GenerationRequest, notes: list[str]) -> EpsFn:
        """The network as the sampler calls it: (x_t, t) -> raw output, conditioned per the bundle's kind."""
        b = self.bundle
        kind = b.conditioning_kind
        denoiser: Any = b.denoiser
        if kind is ConditioningKind.CLASS:
            label = req.class_label

            def class_eps(x: np.ndarray, t: np.ndarray) -> np.ndarray:
                labels = np.full((x.shape[0],), label, dtype=np.int64)
                return np.asarray(denoiser(x, t, class_labels=labels))

            return class_eps
        if kind is ConditioningKind.NONE:
            return lambda x, t: np.asarray(denoiser(x, t))
        _s, _n, guidance, _seed = _resolved_fields(req)
        prompts = [req.prompt] if isinstance(req.prompt, str) else list(req.prompt)
        context, mask = self._encode(prompts, notes)
        if req.negative_prompt:  # the negative prompt takes the unconditional prompt's place
            uncond_context, uncond_mask = self._encode([req.negative_prompt], notes)
        else:
            uncond_context, uncond_mask = self.unconditional()
        return guided_eps_fn(denoiser, context, mask, uncond_context, uncond_mask, guidance, b.variance)

    def generate(
        self,
        request: GenerationRequest,
        should_stop: Callable[[], bool] | None = None,
        on_step: Callable[[Step], None] | None = None,
    ) -> GenerationResult:
        """The batched entry point: resolve, run the reverse process to x_0, decode to uint8 with metadata.

        Every image of the batch shares each network call; image i uses seed + i (and prompt i
        when the request has one per image). `ModelOutputError` if the model produced NaN/inf.
        """
        return generate_batch(self, request, should_stop, on_step)

    def image_metadata(self, request: GenerationRequest, index: int, seconds: float) -> dict[str, Any]:
        """Settings that reproduce image `index` of a resolved request alone (its seed is seed + index)."""
        b = self.bundle
        return {**run_metadata(request, index, seconds, b.name, b.model_hash, self.provider_info,
                               b.image_size, b.image_size),
                **self._class_metadata(request)}

    def _class_metadata(self, request: GenerationRequest) -> dict[str, Any]:
        """A model without text: its conditioning kind, and a class model's class_label (and class_name
        when the bundle names its classes)."""
        kind = self.bundle.conditioning_kind
        if kind is ConditioningKind.TEXT:
            return {}
        meta: dict[str, Any] = {"conditioning": kind.value}
        if request.class_label is not None:
            index = int(request.class_label)
            names = self.bundle.class_names
            meta.update(class_label=index, **({"class_name": names[index]} if names else {}))
        return meta

    def cancel(self) -> None:
        """Stop before the next step and terminate the network call in flight (thread-safe)."""
        self._stop.set()
        self.bundle.denoiser.cancel()


def generate_batch(
    pipeline: Any,
    request: GenerationRequest,
    should_stop: Callable[[], bool] | None = None,
    on_step: Callable[[Step], None] | None = None,
) -> GenerationResult:
    """`generate` of every pipeline (pixel and latent): iterate, run to the end, uint8 images + metadata.

    `pipeline` has `iterate(request, should_stop) -> SamplingRun`, `image_metadata` and
    `provider_info`; `on_step` sees every step when the request previews, else the last one.
    """
    start = time.perf_counter()
    run = pipeline.iterate(request, should_stop)
    req = run.request

    def report(step: Step) -> None:
        if on_step is not None and (req.preview or step.index == step.count - 1):
            on_step(step)

    last = run_to_end(run.steps, report)
    seconds = time.perf_counter() - start
    return GenerationResult(
        images=to_uint8(last.x_prev),
        metadata=[pipeline.image_metadata(req, i, seconds) for i in range(req.batch)],
        seconds=seconds,
        steps_per_s=last.count / seconds if seconds > 0 else float("inf"),
        provider=pipeline.provider_info,
        request=req,
        notes=run.notes,
    )


def run_metadata(request: GenerationRequest, index: int, seconds: float, model: str, model_hash: str,
                 info: ProviderInfo, width: int, height: int) -> dict[str, Any]:
    """The PNG metadata every pipeline records for image `index` of a resolved request: the settings
    that reproduce it alone (its seed is seed + index), the model, the provider and the run time."""
    sampler_id, steps, guidance, seed = _resolved_fields(request)
    sampler = SamplerKind(sampler_id)
    return {
        "prompt": request.prompt_of(index),
        "negative_prompt": request.negative_prompt,
        "seed": int(seed) + index,
        "steps": int(steps),
        "sampler": sampler.value,
        "guidance": float(guidance),
        "model": model,
        "model_hash": model_hash,
        "provider": info.active,
        "onnxruntime": info.onnxruntime_version,
        "width": width,
        "height": height,
        "batch_size": int(request.batch),
        "batch_index": index,
        "seconds": round(seconds, 3),
        "clip_x0": bool(request.clip_x0),
        # sampler options only where they shape the image: η for DDIM, σ_t² for DDPM
        **({"eta": float(request.eta)} if sampler is SamplerKind.DDIM else {}),
        **({"ddpm_variance": request.ddpm_variance}
           if sampler is SamplerKind.DDPM and request.ddpm_variance is not None else {}),
        **({"strength": float(request.strength)} if request.init_image is not None else {}),
    }
