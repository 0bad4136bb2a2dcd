"""Latent diffusion (Stable-Diffusion family) on ONNX Runtime: load a model, sample in latent space.

A `LatentModel` comes from one of two folders:

- our latent bundle: model.json (format 2) with a `latent` block (docs/design.md "Latent
  diffusion"): unet.onnx (x, t = the paper's t, context -> model_output), text_encoder.onnx,
  tokenizer.json, vae_decoder.onnx, vae_encoder.onnx;
- the layout Hugging Face Optimum's ONNX export writes: model_index.json, text_encoder/,
  unet/, vae_decoder/, vae_encoder/ (each with model.onnx and config.json), tokenizer/
  (vocab.json, merges.txt) and scheduler/scheduler_config.json. Its U-Net takes diffusers'
  timestep, which is the paper's t − 1.

`LatentPipeline` has the surface of `inference.pipeline.Pipeline` (resolve, iterate, generate,
image_metadata, cancel), so the CLI and the GUI worker drive it unchanged. Latent diffusion
(Rombach et al. 2022) runs the same reverse process on z = scaling_factor · E(x) of shape
[N, C, H/f, W/f]: x_T ~ N(0, I) there, ε̂ from the U-Net with classifier-free guidance on CLIP
embeddings (padded to max_length, the negative prompt or "" as the unconditional input), and
the final z_0 is decoded by the VAE, x = D(z_0 / scaling_factor). Timesteps follow the model's
steps_offset (diffusers' "leading" grid, `latent_timesteps`). Each step's preview is a 3×C linear
map of x̂_0's latents (cheap), or a full decode where that fits 10 % of the run's time.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from diffusion_studio.core.bundle import ConditioningKind
from diffusion_studio.core.files import sha256_file
from diffusion_studio.core.guidance import combine_guidance
from diffusion_studio.core.images import from_uint8
from diffusion_studio.core.latent_preview import apply_preview, fit_preview
from diffusion_studio.core.params import SamplerKind, random_seed
from diffusion_studio.core.prediction import (
    PredictionKind,
    VarianceKind,
    parse_prediction_kind,
    parse_variance_kind,
)
from diffusion_studio.core.sampler_steps import SamplerOptions, step_function
from diffusion_studio.core.sampling_loop import Step, _run, ddpm_variance_for, img2img_timesteps
from diffusion_studio.core.schedule import Schedule, make_schedule
from diffusion_studio.errors import BundleError, Cancelled, UsageError
from diffusion_studio.inference.clip_tokenizer import clip_tokenizer_from_folder, padding_of
from diffusion_studio.inference.pipeline import (
    GenerationRequest,
    GenerationResult,
    SamplingRun,
    _resolved_fields,
    generate_batch,
    run_metadata,
)
from diffusion_studio.inference.providers import CUDA, ProviderInfo, check_device, create_session
from diffusion_studio.inference.seeds import batch_rng

MODEL_JSON = "model.json"
MODEL_INDEX = "model_index.json"
OPTIMUM_PARTS = ("text_encoder", "unet", "vae_decoder")
HASH_LENGTH = 10
DEFAULT_GUIDANCE = 7.5
DEFAULT_STEPS = 20
FULL_DECODE_SHARE = 0.1  # at most this share of a previewed run's time goes to full VAE decodes of x̂_0
PREVIEW_FIT_SIZE = 8  # latent side of the random latents a preview map is fitted on (Optimum folders)


def is_latent_folder(path: str | os.PathLike[str] | None) -> bool:
    """Whether a folder is an Optimum layout or a bundle whose model.json has a `latent` block."""
    if path is None:
        return False
    folder = Path(path)
    if (folder / MODEL_INDEX).is_file() and not (folder / MODEL_JSON).exists():
        return True
    try:
        data = json.loads((folder / MODEL_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and isinstance(data.get("latent"), dict)


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"The folder {path.parent} lacks {what} ({path.name}).") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise BundleError(f"{path} is not valid JSON ({str(exc).splitlines()[0]}).") from None
    if not isinstance(data, dict):
        raise BundleError(f"{path} must hold a JSON object.")
    return data


def _session(path: Path, device: str, what: str) -> tuple[ort.InferenceSession, ProviderInfo]:
    if not path.is_file():
        raise BundleError(f"The model folder lacks its {what} {path}.")
    try:
        return create_session(path, device)
    except UsageError:
        raise
    except Exception as exc:  # InvalidProtobuf, Fail, ... from onnxruntime
        reason = " ".join(str(exc).split())[:120]
        raise BundleError(f"The {what} {path} is not a valid ONNX model ({reason}).") from exc


# --- CLIP tokenizer ---------------------------------------------------------------------------


class ClipTokenizer:
    """CLIP's BPE as diffusers' pipelines call it: padding="max_length", truncation, max_length L.

    Wraps the `tokenizers.Tokenizer` of `inference.clip_tokenizer` (built from an Optimum
    tokenizer/ folder's vocab.json + merges.txt, or our bundle's tokenizer.json), which frames
    with <|startoftext|> … <|endoftext|>, truncates to L and pads with the pad token to L.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.max_length, self.pad_id = padding_of(tokenizer)

    @classmethod
    def from_folder(cls, folder: Path) -> ClipTokenizer:
        return cls(clip_tokenizer_from_folder(folder))

    @classmethod
    def from_json(cls, path: Path) -> ClipTokenizer:
        from tokenizers import Tokenizer

        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as exc:
            raise BundleError(f"The tokenizer {path} cannot be read ({str(exc).splitlines()[0]}).") from None
        return cls(tok)

    def __call__(self, prompts: Sequence[str]) -> tuple[np.ndarray, list[str]]:
        """input_ids int64 [N, L] and a note when a prompt was truncated."""
        encodings = self.tokenizer.encode_batch(list(prompts))
        ids = np.array([e.ids for e in encodings], dtype=np.int64).reshape(len(prompts), self.max_length)
        truncated = any(e.overflowing for e in encodings)
        return ids, ([f"the prompt was truncated to {self.max_length} tokens (CLIP's limit)."] if truncated else [])


def _optional_json(path: Path) -> dict[str, Any]:
    return _read_json(path, path.name) if path.is_file() else {}


@dataclass(frozen=True)
class _Conditioning:
    kind: ConditioningKind = ConditioningKind.TEXT


@dataclass(frozen=True)
class _Diffusion:
    prediction: PredictionKind
    variance: VarianceKind
    clip_sample: bool
    clip_sample_range: float
    steps_offset: int


@dataclass(frozen=True)
class LatentSpecView:
    """The fields of `core.bundle.BundleSpec` the GUI reads (sizes, schedule, defaults), for a LatentModel."""

    name: str
    image_size: int
    channels: int
    T: int
    schedule: str
    sampler: str
    steps: int
    guidance: float
    diffusion: _Diffusion
    conditioning: _Conditioning = _Conditioning()


# --- the model --------------------------------------------------------------------------------


@dataclass
class LatentModel:
    """A latent diffusion model's sessions and facts: everything a `LatentPipeline` needs.

    Quacks like `bundle_loader.LoadedBundle` where the CLI and GUI read it (name, image_size,
    channels = the image's, conditioning_kind, model_hash, defaults, provider_info).
    """

    name: str
    folder: Path
    source: str  # "bundle" | "optimum"
    unet: ort.InferenceSession
    unet_names: tuple[str, str, str, str]  # x, t, context, output
    t_offset: int  # added to the paper's t for the U-Net's timestep input (−1 for diffusers' graphs)
    t_dtype: Any  # numpy dtype of the timestep input
    text_encoder: ort.InferenceSession
    tokenizer: ClipTokenizer
    vae_decoder: ort.InferenceSession
    vae_encoder: ort.InferenceSession | None
    schedule: Schedule
    prediction: PredictionKind
    variance: VarianceKind
    clip_sample: bool
    clip_range: float
    steps_offset: int  # diffusers' (SD: 1): the leading timestep grid, `latent_timesteps`
    latent_channels: int
    factor: int
    scaling_factor: float
    image_size: int  # the default width and height in pixels
    preview_matrix: np.ndarray | None  # [3, C]: RGB ≈ M z + b (None: fitted on first use)
    preview_bias: np.ndarray | None
    default_sampler: str
    default_steps: int
    default_guidance: float
    model_hash: str
    provider_info: ProviderInfo
    flops_per_forward: float | None = None  # at image_size, batch 1
    channels: int = 3  # the image's channels (init images)
    conditioning_kind: ConditioningKind = ConditioningKind.TEXT
    vocabulary: tuple[str, ...] | None = None
    class_names: tuple[str, ...] | None = None
    num_classes: int | None = None
    # fp16 U-Net on CUDA: opens the fp32 U-Net when fp16 gives non-finite values (then None)
    unet_fp32: Callable[[], tuple[ort.InferenceSession, ProviderInfo]] | None = None
    # pixels: the traced U-Net's skip connections need latents divisible by 2^(levels − 1), so sizes
    # are multiples of factor · 2^(levels − 1) (SD: 64); 0: unknown, the factor alone
    size_multiple: int = 0

    @property
    def size_step(self) -> int:
        """The step of valid widths and heights in pixels: the factor, or the U-Net's multiple when known."""
        return max(self.factor, self.size_multiple)

    @property
    def T(self) -> int:
        return self.schedule.T

    @property
    def spec(self) -> LatentSpecView:
        """What the GUI reads of a bundle's model.json (image size, schedule, sampler defaults)."""
        return LatentSpecView(
            name=self.name, image_size=self.image_size, channels=self.channels, T=self.T,
            schedule=self.schedule.kind.value, sampler=self.default_sampler, steps=self.default_steps,
            guidance=self.default_guidance,
            diffusion=_Diffusion(self.prediction, self.variance, self.clip_sample, self.clip_range, self.steps_offset))

    @property
    def max_tokens(self) -> int:
        return self.tokenizer.max_length

    # -- the graphs, as the sampler calls them --

    def unet_call(self, x: np.ndarray, t: np.ndarray, context: np.ndarray) -> np.ndarray:
        """The raw output for latents x [N,C,h,w] at the paper's t [N] with CLIP context [N,L,D]."""
        x_name, t_name, c_name, out = self.unet_names
        feeds = {x_name: np.ascontiguousarray(x, np.float32),
                 t_name: (np.asarray(t, np.int64) + self.t_offset).astype(self.t_dtype),
                 c_name: np.ascontiguousarray(context, np.float32)}
        output = np.asarray(self.unet.run([out], feeds)[0], np.float32)
        if self.unet_fp32 is not None and not np.all(np.isfinite(output)):
            self.unet, info = self.unet_fp32()  # fp16 overflowed: the rest of this model runs in fp32
            self.unet_fp32 = None
            self.provider_info = info.with_note("the fp16 U-Net gave NaN/inf, so it switched to fp32")
            output = np.asarray(self.unet.run([out], feeds)[0], np.float32)
        return output

    def encode_text(self, ids: np.ndarray) -> np.ndarray:
        name = self.text_encoder.get_inputs()[0].name
        outputs = [o.name for o in self.text_encoder.get_outputs()]
        wanted = "last_hidden_state" if "last_hidden_state" in outputs else outputs[0]
        return np.asarray(self.text_encoder.run([wanted], {name: ids.astype(np.int64)})[0], np.float32)

    def decode(self, latents: np.ndarray) -> np.ndarray:
        """x = D(z / scaling_factor): latents [N,C,h,w] -> images [N,3,H,W] in [-1, 1], one at a time.

        A decoder that gives NaN/inf is reported (`ModelOutputError` from `run_to_end`'s check
        on the caller's side is not enough: the decode happens after it).
        """
        name = self.vae_decoder.get_inputs()[0].name
        out = self.vae_decoder.get_outputs()[0].name
        z = np.asarray(latents, np.float32) / np.float32(self.scaling_factor)
        images = [np.asarray(self.vae_decoder.run([out], {name: z[i : i + 1]})[0], np.float32)
                  for i in range(z.shape[0])]
        return np.clip(np.concatenate(images), -1.0, 1.0)

    def encode_image(self, image: np.ndarray) -> np.ndarray:
        """z_0 = scaling_factor · mean of E(x) for images [N,3,H,W] in [-1, 1] (img2img)."""
        if self.vae_encoder is None:
            raise UsageError(f"The model {self.name} has no VAE encoder, so it cannot start from an image.")
        name = self.vae_encoder.get_inputs()[0].name
        out = self.vae_encoder.get_outputs()[0].name
        moments = np.asarray(self.vae_encoder.run([out], {name: image.astype(np.float32)})[0], np.float32)
        if moments.shape[1] == 2 * self.latent_channels:  # [mean, log σ²] of the posterior
            moments = moments[:, : self.latent_channels]
        return moments * np.float32(self.scaling_factor)

    def preview_map(self) -> tuple[np.ndarray, np.ndarray]:
        """The 3×C map and bias RGB ≈ A z + b (z: decoder-input latents); fitted once when the folder has none."""
        if self.preview_matrix is None or self.preview_bias is None:
            self.preview_matrix, self.preview_bias = fit_preview_map(self)
        return self.preview_matrix, self.preview_bias

    def preview(self, latents: np.ndarray) -> np.ndarray:
        """Approximate images [N,3,h·f,w·f] in [-1, 1]: A (ẑ / scaling_factor) + b, nearest-upscaled by f."""
        m, b = self.preview_map()
        rgb = apply_preview(np.asarray(latents, np.float32) / np.float32(self.scaling_factor), m, b)
        return np.repeat(np.repeat(rgb, self.factor, axis=2), self.factor, axis=3)


def fit_preview_map(model: LatentModel, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`core.latent_preview.fit_preview` on random latents and their decodes (for folders without a map).

    The latents are drawn as the sampler's z_0 would be distributed, N(0, I) in the scaled space,
    and divided by the scaling factor into the decoder's input space, where the map applies.
    """
    rng = np.random.default_rng(seed)
    s, c = PREVIEW_FIT_SIZE, model.latent_channels
    z = rng.standard_normal((2, c, s, s), dtype=np.float32)
    images = model.decode(z)  # decode divides by the scaling factor
    matrix, bias = fit_preview(z / np.float32(model.scaling_factor), images, model.factor)
    return matrix.astype(np.float32), bias.astype(np.float32)


def _unet_io(session: ort.InferenceSession, path: Path, optimum: bool) -> tuple[tuple[str, str, str, str], Any]:
    inputs = {arg.name: arg for arg in session.get_inputs()}
    names = ("sample", "timestep", "encoder_hidden_states") if optimum else ("x", "t", "context")
    if set(inputs) != set(names):  # e.g. SDXL's text_embeds/time_ids or LCM's timestep_cond are not supported
        raise BundleError(f"The U-Net {path} has inputs {sorted(inputs)}, but it must take exactly "
                          f"{', '.join(names)} (a Stable Diffusion 1.x/2.x U-Net).")
    outputs = [o.name for o in session.get_outputs()]
    output = "out_sample" if optimum else "model_output"
    if output not in outputs:
        output = outputs[0]
    t_type = inputs[names[1]].type
    t_dtype = np.int64 if "int64" in t_type else np.float16 if "float16" in t_type else np.float32
    return (*names, output), t_dtype


def _latent_shape_facts(session: ort.InferenceSession, name: str) -> list[Any]:
    return list({arg.name: arg for arg in session.get_inputs()}[name].shape)


def _sampler_for(scheduler_class: str) -> str:
    if "DDIM" in scheduler_class:
        return SamplerKind.DDIM.value
    if "DDPM" in scheduler_class:
        return SamplerKind.DDPM.value
    return SamplerKind.DPMPP_2M.value


def load_optimum(folder: Path, device: str = "auto") -> LatentModel:
    """A LatentModel from the folder Optimum's ONNX export writes (BundleError: one sentence)."""
    index = _read_json(folder / MODEL_INDEX, "its model index")
    if not (folder / "unet" / "model.onnx").exists() and any((folder / "unet").glob("diffusion_pytorch_model.*")):
        raise BundleError(f"The folder {folder} is a diffusers pipeline with PyTorch weights, not an ONNX export; "
                          f"convert it with: python -m exporter diffusers {folder} --out BUNDLE.")
    for part in OPTIMUM_PARTS:
        if not (folder / part / "model.onnx").is_file():
            raise BundleError(f"The Optimum folder {folder} lacks {part}/model.onnx.")
    scheduler = _read_json(folder / "scheduler" / "scheduler_config.json", "the scheduler's configuration")
    vae = _optional_json(folder / "vae_decoder" / "config.json")
    unet_config = _optional_json(folder / "unet" / "config.json")
    try:
        T = int(scheduler.get("num_train_timesteps", 1000))
        schedule = make_schedule(str(scheduler.get("beta_schedule", "scaled_linear")), T,
                                 float(scheduler.get("beta_start", 0.00085)), float(scheduler.get("beta_end", 0.012)))
        prediction = parse_prediction_kind(scheduler.get("prediction_type", "epsilon"))
        variance = parse_variance_kind(scheduler.get("variance_type") or "fixed_small")
        channels = int(vae.get("latent_channels", 4))
        factor = 2 ** (len(vae.get("block_out_channels", [0, 0, 0, 0])) - 1)
        scaling = float(vae.get("scaling_factor", 0.18215))
    except (TypeError, ValueError) as exc:
        raise BundleError(f"The Optimum folder {folder} has a configuration this app cannot use ({exc}).") from None
    unet, info = _session(folder / "unet" / "model.onnx", device, "U-Net")
    names, t_dtype = _unet_io(unet, folder / "unet" / "model.onnx", optimum=True)
    text_encoder, _ = _session(folder / "text_encoder" / "model.onnx", device, "text encoder")
    vae_decoder, _ = _session(folder / "vae_decoder" / "model.onnx", device, "VAE decoder")
    encoder_path = folder / "vae_encoder" / "model.onnx"
    vae_encoder = _session(encoder_path, device, "VAE encoder")[0] if encoder_path.is_file() else None
    tokenizer = ClipTokenizer.from_folder(folder / "tokenizer")
    sample_size = unet_config.get("sample_size")
    shape = _latent_shape_facts(unet, names[0])
    latent_side = sample_size if isinstance(sample_size, int) else shape[2] if isinstance(shape[2], int) else 64
    scheduler_class = str(scheduler.get("_class_name", ""))
    levels = unet_config.get("block_out_channels")
    return LatentModel(
        name=str(index.get("_name_or_path") or folder.name).rstrip("/").split("/")[-1] or folder.name,
        folder=folder.resolve(), source="optimum",
        unet=unet, unet_names=names, t_offset=-1, t_dtype=t_dtype,
        text_encoder=text_encoder, tokenizer=tokenizer, vae_decoder=vae_decoder, vae_encoder=vae_encoder,
        schedule=schedule, prediction=prediction, variance=variance,
        clip_sample=bool(scheduler.get("clip_sample", False)),
        clip_range=float(scheduler.get("clip_sample_range", 1.0)),
        steps_offset=int(scheduler.get("steps_offset", 0)),
        latent_channels=channels, factor=factor, scaling_factor=scaling, image_size=int(latent_side) * factor,
        preview_matrix=None, preview_bias=None,
        default_sampler=_sampler_for(scheduler_class), default_steps=DEFAULT_STEPS,
        default_guidance=DEFAULT_GUIDANCE,
        model_hash=sha256_file(folder / "unet" / "model.onnx")[:HASH_LENGTH], provider_info=info,
        size_multiple=factor * 2 ** (len(levels) - 1) if isinstance(levels, list) and levels else 0,
    )


def load_latent_bundle(folder: Path, device: str = "auto") -> LatentModel:
    """A LatentModel from our bundle (model.json with a `latent` block; every file checked by sha256)."""
    from diffusion_studio.core.bundle import read_model_json
    from diffusion_studio.inference.bundle_loader import _checked_file, prefer_fp16

    spec = read_model_json(folder / MODEL_JSON)
    latent = spec.latent
    if latent is None:
        raise BundleError(f"{folder / MODEL_JSON} has no 'latent' block, so it is not a latent bundle.")
    files = dict(spec.files)
    co = spec.conditioning
    if co.kind is not ConditioningKind.TEXT or co.text_encoder_kind != "clip" or not co.tokenizer:
        raise BundleError(f"The latent bundle {folder} must be text-conditioned with a CLIP encoder and tokenizer.")
    unet_path, unet_sha = _checked_file(folder, spec.unet_file, files, "U-Net file")
    fp32_opener = None
    if spec.unet_fp16_file and prefer_fp16(spec, device):  # CUDA: the fp16 U-Net, the VAE stays fp32
        fp16_path, _ = _checked_file(folder, spec.unet_fp16_file, files, "fp16 U-Net file")
        unet, info = _session(fp16_path, device, "fp16 U-Net")
        if info.active == CUDA:
            info = info.with_note("fp16 U-Net, fp32 VAE")

            def fp32_opener() -> tuple[ort.InferenceSession, ProviderInfo]:
                return _session(unet_path, device, "U-Net")
        else:
            unet, info = _session(unet_path, device, "U-Net")
    else:
        unet, info = _session(unet_path, device, "U-Net")
    names, t_dtype = _unet_io(unet, unet_path, optimum=False)
    encoder_path, _ = _checked_file(folder, spec.text_encoder, files, "text encoder")
    text_encoder, _ = _session(encoder_path, device, "text encoder")
    tokenizer = ClipTokenizer.from_json(_checked_file(folder, co.tokenizer, files, "tokenizer")[0])
    decoder_path, _ = _checked_file(folder, latent.vae_decoder, files, "VAE decoder")
    vae_decoder, _ = _session(decoder_path, device, "VAE decoder")
    vae_encoder = None
    if latent.vae_encoder:
        vae_encoder = _session(_checked_file(folder, latent.vae_encoder, files, "VAE encoder")[0], device,
                               "VAE encoder")[0]
    d = spec.diffusion
    schedule = make_schedule(d.schedule, d.T, d.beta_start, d.beta_end)
    has_map = latent.preview_matrix is not None and latent.preview_bias is not None
    raw = _read_json(folder / MODEL_JSON, "model.json")
    flops = raw.get("unet", {}).get("flops_per_forward")
    multiple = raw.get("latent", {}).get("size_multiple")  # written by the exporter since dynamic H, W
    return LatentModel(
        name=spec.name, folder=folder.resolve(), source="bundle",
        unet=unet, unet_names=names, t_offset=0, t_dtype=t_dtype,
        text_encoder=text_encoder, tokenizer=tokenizer, vae_decoder=vae_decoder, vae_encoder=vae_encoder,
        schedule=schedule, prediction=d.prediction, variance=d.variance, clip_sample=bool(d.clip_sample),
        clip_range=float(d.clip_sample_range), steps_offset=int(d.steps_offset),
        latent_channels=latent.channels, factor=latent.factor, scaling_factor=latent.scaling_factor,
        image_size=spec.image_size,
        preview_matrix=np.asarray(latent.preview_matrix, np.float32) if has_map else None,
        preview_bias=np.asarray(latent.preview_bias, np.float32) if has_map else None,
        default_sampler=str(getattr(spec.sampler, "value", spec.sampler)), default_steps=spec.steps,
        default_guidance=spec.guidance, model_hash=unet_sha[:HASH_LENGTH], provider_info=info,
        flops_per_forward=float(flops) if isinstance(flops, (int, float)) and flops > 0 else None,
        unet_fp32=fp32_opener,
        size_multiple=multiple if type(multiple) is int and multiple > 0 else 0,
    )


def load_latent(path: str | os.PathLike[str], device: str = "auto") -> LatentModel:
    """A LatentModel from an Optimum folder or our latent bundle; BundleError (one sentence) otherwise."""
    device = check_device(device)
    folder = Path(path)
    if not folder.is_dir():
        raise BundleError(f"The model folder {folder} does not exist or is not a folder.")
    if (folder / MODEL_JSON).exists():
        return load_latent_bundle(folder, device)
    if (folder / MODEL_INDEX).exists():
        return load_optimum(folder, device)
    raise BundleError(f"The folder {folder} is not a model: it has neither model.json nor {MODEL_INDEX}.")


def open_model(path: str | os.PathLike[str] | None, device: str = "auto") -> Any:
    """Today's `LoadedBundle` for a pixel bundle, a `LatentModel` for a latent bundle or Optimum folder."""
    if is_latent_folder(path) or (path is not None and (Path(path) / MODEL_INDEX).exists()):
        return load_latent(path, device)  # type: ignore[arg-type]
    from diffusion_studio.inference.bundle_loader import load_bundle

    return load_bundle(path, device)


def make_pipeline(model: Any) -> Any:
    """The pipeline for what `open_model` returned: `LatentPipeline` or `inference.pipeline.Pipeline`."""
    if isinstance(model, LatentModel):
        return LatentPipeline(model)
    from diffusion_studio.inference.pipeline import Pipeline

    return Pipeline(model)


def latent_timesteps(T: int, steps: int, strength: float, steps_offset: int) -> np.ndarray:
    """The paper's timesteps to visit, descending, for a model sampled with diffusers' steps_offset.

    steps_offset 0: ours (`img2img_timesteps`: evenly over [1, T], starting at T). steps_offset k > 0:
    diffusers' "leading" spacing the model was configured with, diffusers' τ_i = i·⌊T/n⌋ + k for
    i = n−1 … 0, i.e. the paper's t = τ + 1 (SD 1.x/2.x: k = 1, so 20 steps visit 952, 902, …, 2);
    img2img keeps the last round(strength·n) of them, as diffusers' img2img pipeline does. The
    last step goes to ᾱ_0 = 1 in both. Where the leading grid does not start within two strides of
    T and in its upper half (with n > T/2 or n = 1 it would start far below T from pure noise), ours is used.
    """
    ours = img2img_timesteps(T, steps, strength)  # also validates steps and strength
    if steps_offset <= 0:
        return ours
    grid = np.arange(steps - 1, -1, -1, dtype=np.int64) * (T // steps) + steps_offset + 1
    if grid[0] > T or grid[0] < max(T - 2 * (T // steps), T // 2) or len(np.unique(grid)) != steps:
        return ours
    keep = min(max(1, round(strength * steps)), steps)
    return grid[steps - keep:]


def check_pixel_size(bundle: Any, width: int | None, height: int | None) -> None:
    """A pixel bundle makes only its own size: UsageError (one sentence) for any other --width/--height."""
    size = int(bundle.image_size)
    for label, value in (("width", width), ("height", height)):
        if value is not None and value != size:
            raise UsageError(f"The model {bundle.name} makes {size}x{size} images only, so the {label} must be "
                             f"{size}, got {value}.")


def latent_init_image(image: Any, width: int, height: int) -> np.ndarray:
    """An img2img start image (PIL), center-cropped to width:height and resized (Lanczos): [1,3,H,W] in [-1, 1]."""
    from PIL import Image

    image = image.convert("RGB")
    w, h = image.size
    scale = min(w / width, h / height)
    cw, ch = max(1, round(width * scale)), max(1, round(height * scale))
    left, top = (w - cw) // 2, (h - ch) // 2
    image = image.crop((left, top, left + cw, top + ch)).resize((width, height), Image.Resampling.LANCZOS)
    return from_uint8(np.asarray(image, dtype=np.uint8))[None]


# --- the pipeline -----------------------------------------------------------------------------


@dataclass(frozen=True)
class LatentStep(Step):
    """A `Step` whose images are previews (x_prev, x0_pred, eps: approximate RGB in [-1, 1]); the
    latents it came from ride along so a trajectory can decode any step in full (`decode`)."""

    latent_x_prev: np.ndarray | None = None
    latent_x0_pred: np.ndarray | None = None
    decoded: bool = False  # x0_pred is the full VAE decode (always on the last step), not the linear map


class LatentPipeline:
    """CLIP text encoder + U-Net in latent space + VAE, with the surface of `inference.pipeline.Pipeline`."""

    def __init__(self, model: LatentModel) -> None:
        self.bundle = model
        self._stop = threading.Event()
        self._flop_rate: float | None = None

    @property
    def provider_info(self) -> ProviderInfo:
        return self.bundle.provider_info

    def size_of(self, request: GenerationRequest) -> tuple[int, int]:
        """(width, height) in pixels: the request's or the model's; UsageError unless multiples of the factor."""
        m = self.bundle
        width = getattr(request, "width", None) or m.image_size
        height = getattr(request, "height", None) or m.image_size
        fixed = _latent_shape_facts(m.unet, m.unet_names[0])[2:]  # a graph exported with fixed h, w
        for label, value, side in (("width", width, fixed[1]), ("height", height, fixed[0])):
            if not isinstance(value, int) or value < m.factor or value % m.factor or value > 4096:
                raise UsageError(f"The {label} must be a multiple of {m.factor} between {m.factor} and 4096 "
                                 f"for the model {m.name}, got {value}.")
            if value % m.size_step:
                raise UsageError(f"The U-Net of {m.name} needs sizes that are multiples of {m.size_step} pixels, "
                                 f"so the {label} cannot be {value}.")
            if isinstance(side, int) and value != side * m.factor:
                raise UsageError(f"The U-Net of {m.name} was exported for {side * m.factor}-pixel images only, "
                                 f"so the {label} must be {side * m.factor}, got {value}.")
        return int(width), int(height)

    def resolve(self, request: GenerationRequest) -> GenerationRequest:
        m = self.bundle
        if request.class_label is not None:
            raise UsageError(f"The model {m.name} is not class-conditional, so it takes no class label.")
        filled = replace(
            request,
            sampler=m.default_sampler if request.sampler is None else request.sampler,
            steps=m.default_steps if request.steps is None else request.steps,
            guidance=m.default_guidance if request.guidance is None else request.guidance,
            seed=random_seed() if request.seed is None else request.seed,
            ddpm_variance=request.ddpm_variance or self._ddpm_variance(),
            clip_x0=m.clip_sample if request.clip_x0 is None else request.clip_x0,
        )
        self.size_of(filled)
        return filled.validated(m.T)

    def _ddpm_variance(self) -> str | None:
        fixed = ddpm_variance_for(self.bundle.variance)
        return None if fixed is None else fixed.value

    def class_index(self, label: object) -> None:
        if label is not None:
            raise UsageError(f"The model {self.bundle.name} is not class-conditional, so it takes no class label.")

    def _context(self, prompts: Sequence[str], notes: list[str]) -> np.ndarray:
        ids, truncated = self.bundle.tokenizer(prompts)
        notes.extend(n for n in truncated if n not in notes)
        return self.bundle.encode_text(ids)

    def _init_latents(self, image: np.ndarray | None, width: int, height: int) -> np.ndarray | None:
        if image is None:
            return None
        array = np.asarray(image)
        if array.dtype == np.uint8:
            if array.shape != (height, width, 3):
                raise UsageError(f"The init image must be {width}x{height} with 3 channels, got shape {array.shape}.")
            array = from_uint8(array)
        if array.shape == (3, height, width):
            array = array[None]
        if array.shape != (1, 3, height, width):
            raise UsageError(f"The init image must have shape (3, {height}, {width}), got {array.shape}.")
        return self.bundle.encode_image(np.clip(array.astype(np.float32), -1.0, 1.0))

    def iterate(self, request: GenerationRequest, should_stop: Callable[[], bool] | None = None) -> SamplingRun:
        """Resolve, encode the prompts, and return the run whose steps yield `LatentStep`s (previews)."""
        req = self.resolve(request)
        sampler, n_steps, guidance, seed = _resolved_fields(req)
        width, height = self.size_of(req)
        self._stop.clear()
        notes: list[str] = []
        m = self.bundle
        prompts = [req.prompt] if isinstance(req.prompt, str) else list(req.prompt)
        context = self._context(prompts, notes)
        uncond = self._context([req.negative_prompt], notes)  # "" or the negative prompt (CLIP-padded)
        if req.eta > 0 and sampler != SamplerKind.DDIM.value:
            notes.append(f"eta only changes the ddim sampler; {sampler} ignores it.")
        init = self._init_latents(req.init_image, width, height)
        n = req.batch

        def eps_fn(x: np.ndarray, t: np.ndarray) -> np.ndarray:
            cond = np.broadcast_to(context, (n, *context.shape[1:])) if context.shape[0] == 1 else context
            if guidance == 1.0:
                return m.unet_call(x, t, cond)
            both = m.unet_call(np.concatenate([x, x]), np.concatenate([t, t]),
                               np.concatenate([np.broadcast_to(uncond, cond.shape), cond]))
            return combine_guidance(both[:n], both[n:], guidance)  # ε̂ = ε_u + w (ε_c − ε_u)

        def stop() -> bool:
            return self._stop.is_set() or (should_stop is not None and bool(should_stop()))

        shape = (n, m.latent_channels, height // m.factor, width // m.factor)
        timesteps = latent_timesteps(m.T, n_steps, req.strength if init is not None else 1.0, m.steps_offset)
        fixed = req.ddpm_variance
        from diffusion_studio.core.params import DdpmVariance, parse_ddpm_variance

        options = SamplerOptions(clip_x0=bool(req.clip_x0), eta=req.eta, clip_range=m.clip_range,
                                 ddpm_variance=parse_ddpm_variance(fixed) if fixed else DdpmVariance.BETA)
        raw = _run(eps_fn, m.schedule, shape, step_function(sampler), timesteps, options, batch_rng(seed, n),
                   None if init is None else np.broadcast_to(init, shape).copy(), stop, m.prediction, m.variance)
        return SamplingRun(req, notes, self._previews(raw, full_decodes=req.preview))

    def _previews(self, steps: Iterator[Step], full_decodes: bool) -> Iterator[Step]:
        """Each latent step as a LatentStep: x_prev and x̂_0 through the linear preview map; the last
        step fully decoded. With `full_decodes`, x̂_0 is VAE-decoded instead whenever the decodes so
        far plus one more stay within FULL_DECODE_SHARE of the run's time (measured, not guessed)."""
        m = self.bundle
        start, spent, cost = time.perf_counter(), 0.0, 0.0  # decode time so far; the last decode's cost
        for step in steps:
            decoded = step.index == step.count - 1
            if decoded:
                x_prev = m.decode(step.x_prev) if np.all(np.isfinite(step.x_prev)) else step.x_prev  # NaN: reported
                x0 = x_prev
            else:
                x_prev = m.preview(step.x_prev)
                elapsed = time.perf_counter() - start
                decoded = full_decodes and spent + cost <= FULL_DECODE_SHARE * elapsed
                if decoded:
                    began = time.perf_counter()
                    x0 = m.decode(step.x0_pred)
                    cost = time.perf_counter() - began
                    spent += cost
                else:
                    x0 = m.preview(step.x0_pred)
            yield LatentStep(index=step.index, count=step.count, t=step.t, x_prev=x_prev, x0_pred=x0,
                             eps=np.zeros_like(x0), t_prev=step.t_prev, decoded=bool(decoded),
                             latent_x_prev=step.x_prev, latent_x0_pred=step.x0_pred)

    def decode(self, step: LatentStep) -> np.ndarray:
        """The full VAE decode of a step's x̂_0 (the trajectory's on-demand view), [N,3,H,W] in [-1, 1]."""
        if step.latent_x0_pred is None:
            return step.x0_pred
        return self.bundle.decode(step.latent_x0_pred)

    def generate(
        self,
        request: GenerationRequest,
        should_stop: Callable[[], bool] | None = None,
        on_step: Callable[[Step], None] | None = None,
    ) -> GenerationResult:
        return generate_batch(self, request, should_stop, on_step)

    def image_metadata(self, request: GenerationRequest, index: int, seconds: float) -> dict[str, Any]:
        width, height = self.size_of(request)
        m = self.bundle
        return {**run_metadata(request, index, seconds, m.name, m.model_hash, self.provider_info, width, height),
                "latent": True}

    def cancel(self) -> None:
        """Stop before the next step (thread-safe); the U-Net call in flight finishes."""
        self._stop.set()

    # -- time estimate --

    def _measured_flop_rate(self) -> float:
        """Floating-point operations per second of a float32 matmul on this machine (measured once)."""
        if self._flop_rate is None:
            a = np.random.default_rng(0).standard_normal((384, 384), dtype=np.float32)
            start = time.perf_counter()
            for _ in range(4):
                a @ a
            self._flop_rate = 4 * 2 * 384**3 / max(time.perf_counter() - start, 1e-9)
        return self._flop_rate

    def estimate_seconds(self, request: GenerationRequest) -> float:
        """Seconds the U-Net calls of this request should take: FLOPs per call × calls / the FLOP rate.

        FLOPs per call come from model.json's flops_per_forward (at the model's size, scaled by
        the pixel count and batch, doubled with guidance); without it, one U-Net call is timed at
        the model's size and scaled the same way.
        """
        req = self.resolve(request)
        _s, steps, guidance, _seed = _resolved_fields(req)
        width, height = self.size_of(req)
        m = self.bundle
        area = width * height / float(m.image_size**2)
        rows = req.batch * (1 if guidance == 1.0 else 2)
        n_calls = len(latent_timesteps(m.T, steps, req.strength if req.init_image is not None else 1.0,
                                       m.steps_offset))
        if m.flops_per_forward:
            per_call = m.flops_per_forward / self._measured_flop_rate()
        else:
            side = m.image_size // m.factor
            x = np.zeros((1, m.latent_channels, side, side), np.float32)
            context = np.zeros((1, m.max_tokens, self._embedding_dim()), np.float32)
            start = time.perf_counter()
            m.unet_call(x, np.array([m.T], np.int64), context)
            per_call = time.perf_counter() - start
        return float(per_call * area * rows * n_calls)

    def _embedding_dim(self) -> int:
        shape = _latent_shape_facts(self.bundle.unet, self.bundle.unet_names[2])
        if isinstance(shape[-1], int):
            return int(shape[-1])
        ids, _ = self.bundle.tokenizer([""])
        return int(self.bundle.encode_text(ids).shape[-1])


__all__ = [
    "LatentModel", "LatentPipeline", "LatentStep", "ClipTokenizer", "load_latent", "load_optimum",
    "load_latent_bundle", "open_model", "make_pipeline", "is_latent_folder", "fit_preview_map", "Cancelled",
    "check_pixel_size", "latent_init_image",
]
