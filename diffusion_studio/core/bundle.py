"""The model bundle's `model.json` (format_version 1 or 2): schema, validation, serialisation.

Format 2 adds, all optional with format-1 meanings as defaults: the schedule's β ends, the
prediction target (ε, v or x_0), the reverse-process variance, x̂_0 clipping, and conditioning
kinds beyond text (`class`: a class label per image; `none`: unconditional). A format-1
document is read and written back unchanged; format-2 fields in it are refused.

Every check names the field and the problem in one sentence, e.g.
"model.json: field 'diffusion.T' must be a positive integer, got 'abc'."
The ONNX graphs themselves are checked by `diffusion_studio.inference.bundle_loader`.

Every file of a bundle is confined by its resolved path: `bundle_path` follows symlinks and
refuses a file that leads outside the bundle folder before anything reads it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from diffusion_studio.core.files import (
    atomic_write_text,
    read_json_file,
    resolve_inside,
    sha256_file,
)
from diffusion_studio.core.params import DEFAULT_GUIDANCE, DEFAULT_SAMPLER, DEFAULT_STEPS, GUIDANCE_MAX, SamplerKind
from diffusion_studio.core.prediction import PredictionKind, VarianceKind
from diffusion_studio.core.schedule import ScheduleKind
from diffusion_studio.core.vocabulary import words
from diffusion_studio.errors import BundleError

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MAX_T",
    "MODEL_JSON",
    "BundleSpec",
    "ConditioningKind",
    "ConditioningSpec",
    "DiffusionSpec",
    "ImageSpec",
    "LatentSpec",
    "MAX_VOCABULARY",
    "MAX_WORD_LENGTH",
    "Provenance",
    "SamplerDefaults",
    "UNetSpec",
    "bundle_path",
    "parse_model_json",
    "read_model_json",
    "sha256_file",
    "write_model_json",
]

FORMAT = "diffusion-studio-bundle"
FORMAT_VERSION = 2  # the newest format this app reads; the training exporter still writes 1
MODEL_JSON = "model.json"
SHARED_TEXT_ENCODER = "shared"
MAX_T = 100_000        # diffusion steps: the training limit; a schedule holds 11 float64 arrays of T
MAX_VOCABULARY = 10_000  # words in the optional `vocabulary` list
MAX_WORD_LENGTH = 40     # characters of one vocabulary word
MAX_CLASSES = 100_000   # conditioning.num_classes
MIN_IMAGE_SIZE_V2, MAX_IMAGE_SIZE_V2 = 8, 1024
# Fields a format-1 document may not carry (it would be read with other meanings by an older app).
_V2_DIFFUSION = ("beta_start", "beta_end", "variance", "clip_sample", "clip_sample_range", "steps_offset")
_V2_CONDITIONING = ("kind", "num_classes", "class_names", "text_encoder_kind", "tokenizer", "pad_token_id")
_TEXT_FIELDS = ("text_encoder", "max_tokens", "embedding_dim", "text_encoder_sha256", "tokenizer_sha256",
                "text_encoder_kind", "tokenizer", "pad_token_id")
TEXT_ENCODER_KINDS = ("clip",)  # conditioning.text_encoder_kind: an imported encoder with its own tokenizer.json
MAX_LATENT_CHANNELS = 16
LATENT_FACTORS = (1, 2, 4, 8, 16, 32)
_SHA256 = re.compile(r"[0-9a-f]{64}")
_MISSING = object()


@dataclass(frozen=True)
class ImageSpec:
    size: int      # H = W
    channels: int  # 1, 3 or 4


class ConditioningKind(str, Enum):
    """What the U-Net is conditioned on (model.json `conditioning.kind`)."""

    TEXT = "text"    # context [N,L,D] + context_mask [N,L] from a text encoder (format 1's only kind)
    CLASS = "class"  # class_labels int64 [N] in 0 … num_classes−1
    NONE = "none"    # unconditional: x and t only


@dataclass(frozen=True)
class DiffusionSpec:
    T: int
    schedule: ScheduleKind
    prediction: PredictionKind = PredictionKind.EPSILON
    beta_start: float | None = None  # None: the schedule's own ends (DDPM's, scaled to T for linear)
    beta_end: float | None = None
    variance: VarianceKind = VarianceKind.FIXED_LARGE  # σ_t² of the reverse process
    clip_sample: bool = True          # clip x̂_0 to [−clip_sample_range, clip_sample_range]
    clip_sample_range: float = 1.0
    # diffusers' steps_offset (Stable Diffusion: 1): the "leading" timestep spacing the model was sampled with.
    steps_offset: int = 0


@dataclass(frozen=True)
class SamplerDefaults:
    sampler: SamplerKind = DEFAULT_SAMPLER
    steps: int = DEFAULT_STEPS
    guidance: float = DEFAULT_GUIDANCE


@dataclass(frozen=True)
class UNetSpec:
    file: str
    fp16_file: str | None
    opset: int
    parameters: int
    flops_per_forward: int


@dataclass(frozen=True)
class ConditioningSpec:
    """Text fields are set for kind text only (else None / 0); class fields for kind class only."""

    text_encoder: str | None = None  # "shared" (resources/text_encoder/) or a file name inside the bundle
    max_tokens: int = 0
    embedding_dim: int = 0
    text_encoder_sha256: str | None = None
    tokenizer_sha256: str | None = None
    kind: ConditioningKind = ConditioningKind.TEXT
    num_classes: int | None = None
    class_names: tuple[str, ...] | None = None  # one per class when declared
    # An imported text encoder ("clip"): its tokenizer is the `tokenizers` JSON file `tokenizer` in the
    # bundle, prompts are padded to max_tokens with pad_token_id. None: the studio's own encoder.
    text_encoder_kind: str | None = None
    tokenizer: str | None = None
    pad_token_id: int | None = None

    @property
    def shared(self) -> bool:
        return self.text_encoder == SHARED_TEXT_ENCODER


@dataclass(frozen=True)
class LatentSpec:
    """model.json `latent` (latent diffusion): the U-Net works on latents z of a VAE, x = D(z / scaling_factor).

    Latents are [N, channels, size/factor, size/factor]; `vae_decoder` takes latents already divided
    by scaling_factor, `vae_encoder` (optional, img2img) returns the posterior mean. The preview map
    (3 × channels matrix and bias, fitted by the exporter, core.latent_preview) turns unscaled latents
    into an approximate RGB image in [−1, 1] at latent resolution.
    """

    channels: int
    factor: int
    scaling_factor: float
    vae_decoder: str
    vae_encoder: str | None = None
    preview_matrix: tuple[tuple[float, ...], ...] | None = None  # 3 rows of `channels`
    preview_bias: tuple[float, float, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        preview = None
        if self.preview_matrix is not None and self.preview_bias is not None:
            preview = {"matrix": [list(row) for row in self.preview_matrix], "bias": list(self.preview_bias)}
        return {"channels": self.channels, "factor": self.factor, "scaling_factor": self.scaling_factor,
                "vae_decoder": self.vae_decoder, "vae_encoder": self.vae_encoder, "preview": preview}


@dataclass(frozen=True)
class Provenance:
    run: str | None = None
    step: int | None = None
    weights: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    exporter: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # unknown keys, kept as they were


@dataclass(frozen=True)
class BundleSpec:
    name: str
    image: ImageSpec
    diffusion: DiffusionSpec
    sampler_defaults: SamplerDefaults
    unet: UNetSpec
    conditioning: ConditioningSpec
    provenance: Provenance = field(default_factory=Provenance)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {"sha256": hex, "bytes": int}
    format_version: int = FORMAT_VERSION
    # The words the training captions used (lowercase, see core.vocabulary); None: not declared.
    vocabulary: tuple[str, ...] | None = None
    latent: LatentSpec | None = None  # set for latent-diffusion bundles (format 2)

    # Flat read-only views of the nested fields, for callers that want one level.
    image_size = property(lambda self: self.image.size)
    channels = property(lambda self: self.image.channels)
    T = property(lambda self: self.diffusion.T)
    schedule = property(lambda self: self.diffusion.schedule)
    prediction = property(lambda self: self.diffusion.prediction)
    variance = property(lambda self: self.diffusion.variance)
    conditioning_kind = property(lambda self: self.conditioning.kind)
    sampler = property(lambda self: self.sampler_defaults.sampler)
    steps = property(lambda self: self.sampler_defaults.steps)
    guidance = property(lambda self: self.sampler_defaults.guidance)
    unet_file = property(lambda self: self.unet.file)
    unet_fp16_file = property(lambda self: self.unet.fp16_file)
    text_encoder = property(lambda self: self.conditioning.text_encoder)
    max_tokens = property(lambda self: self.conditioning.max_tokens)
    embedding_dim = property(lambda self: self.conditioning.embedding_dim)
    text_encoder_sha256 = property(lambda self: self.conditioning.text_encoder_sha256)
    tokenizer_sha256 = property(lambda self: self.conditioning.tokenizer_sha256)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object for model.json; parse_model_json(spec.to_dict()) == spec."""
        p = self.provenance
        v2 = self.format_version >= 2
        d, co = self.diffusion, self.conditioning
        diffusion: dict[str, Any] = {"T": d.T, "schedule": d.schedule.value, "prediction": d.prediction.value}
        if v2:
            diffusion.update(beta_start=d.beta_start, beta_end=d.beta_end, variance=d.variance.value,
                             clip_sample=d.clip_sample, clip_sample_range=d.clip_sample_range)
            if d.steps_offset:
                diffusion["steps_offset"] = d.steps_offset
        conditioning: dict[str, Any] = {"kind": co.kind.value} if v2 else {}
        if co.kind is ConditioningKind.TEXT:
            conditioning.update(text_encoder=co.text_encoder, max_tokens=co.max_tokens,
                                embedding_dim=co.embedding_dim, text_encoder_sha256=co.text_encoder_sha256,
                                tokenizer_sha256=co.tokenizer_sha256)
            if co.text_encoder_kind is not None:
                conditioning.update(text_encoder_kind=co.text_encoder_kind, tokenizer=co.tokenizer,
                                    pad_token_id=co.pad_token_id)
        elif co.kind is ConditioningKind.CLASS:
            conditioning.update(num_classes=co.num_classes,
                                class_names=None if co.class_names is None else list(co.class_names))
        return {
            "format": FORMAT,
            "format_version": self.format_version,
            "name": self.name,
            "image": {"size": self.image.size, "channels": self.image.channels},
            "diffusion": diffusion,
            "sampler_defaults": {
                "sampler": self.sampler_defaults.sampler.value,
                "steps": self.sampler_defaults.steps,
                "guidance": self.sampler_defaults.guidance,
            },
            "unet": {
                "file": self.unet.file,
                "fp16_file": self.unet.fp16_file,
                "opset": self.unet.opset,
                "parameters": self.unet.parameters,
                "flops_per_forward": self.unet.flops_per_forward,
            },
            "conditioning": conditioning,
            "provenance": {
                **p.extra,
                "run": p.run,
                "step": p.step,
                "weights": p.weights,
                "metrics": dict(p.metrics),
                "exporter": p.exporter,
            },
            **({} if self.vocabulary is None else {"vocabulary": list(self.vocabulary)}),
            **({} if self.latent is None else {"latent": self.latent.to_dict()}),
            "files": {name: dict(entry) for name, entry in self.files.items()},
        }


def _show(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


class _Checker:
    """Reads fields of a JSON object and raises BundleError naming the dotted field path."""

    def __init__(self, where: str) -> None:
        self.where = where

    def fail(self, name: str, problem: str) -> BundleError:
        return BundleError(f"{self.where}: field '{name}' {problem}.")

    def get(self, obj: Mapping[str, Any], prefix: str, key: str, default: Any = _MISSING) -> Any:
        if key not in obj:
            if default is _MISSING:
                raise self.fail(prefix + key, "is missing")
            return default
        return obj[key]

    def obj(self, obj: Mapping[str, Any], prefix: str, key: str, default: Any = _MISSING) -> dict[str, Any]:
        value = self.get(obj, prefix, key, default)
        if not isinstance(value, dict):
            raise self.fail(prefix + key, f"must be a JSON object, got {_show(value)}")
        return value

    def integer(self, obj: Mapping[str, Any], prefix: str, key: str, lo: int = 0, hi: int | None = None,
            what: str = "a non-negative integer") -> int:
        value = self.get(obj, prefix, key)
        if not isinstance(value, int) or isinstance(value, bool) or value < lo or (hi is not None and value > hi):
            raise self.fail(prefix + key, f"must be {what}, got {_show(value)}")
        return value

    def optional_integer(self, obj: Mapping[str, Any], prefix: str, key: str) -> int | None:
        """A non-negative integer; None where the field is null or absent."""
        if obj.get(key) is None:
            return None
        return self.integer(obj, prefix, key)

    def number(self, obj: Mapping[str, Any], prefix: str, key: str, lo: float = 0.0, hi: float | None = None) -> float:
        value = self.get(obj, prefix, key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= lo or value == float("inf"):
            raise self.fail(prefix + key, f"must be a finite number >= {lo:g}, got {_show(value)}")
        if hi is not None and value > hi:
            raise self.fail(prefix + key, f"must be a number from {lo:g} to {hi:g}, got {_show(value)}")
        return float(value)

    def boolean(self, obj: Mapping[str, Any], prefix: str, key: str) -> bool:
        value = self.get(obj, prefix, key)
        if not isinstance(value, bool):
            raise self.fail(prefix + key, f"must be true or false, got {_show(value)}")
        return value

    def _string(self, prefix: str, key: str, value: Any, or_null: str = "") -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(prefix + key, f"must be a non-empty string{or_null}, got {_show(value)}")
        return value

    def string(self, obj: Mapping[str, Any], prefix: str, key: str) -> str:
        return self._string(prefix, key, self.get(obj, prefix, key))

    def optional_string(self, obj: Mapping[str, Any], prefix: str, key: str) -> str | None:
        """A non-empty string; None where the field is null or absent."""
        value = obj.get(key)
        return None if value is None else self._string(prefix, key, value, " or null")

    def choice(self, obj: Mapping[str, Any], prefix: str, key: str, choices: list[str]) -> str:
        value = self.get(obj, prefix, key)
        if not isinstance(value, str) or value not in choices:
            listed = ", ".join(repr(c) for c in choices)
            raise self.fail(prefix + key, f"must be one of {listed}, got {_show(value)}")
        return value

    def _file_name(self, prefix: str, key: str, value: str) -> str:
        if not _is_plain_name(value):
            raise self.fail(prefix + key, f"must be a file name inside the bundle folder, got {_show(value)}")
        return value

    def file_name(self, obj: Mapping[str, Any], prefix: str, key: str) -> str:
        return self._file_name(prefix, key, self.string(obj, prefix, key))

    def optional_file_name(self, obj: Mapping[str, Any], prefix: str, key: str) -> str | None:
        """A file name inside the bundle folder; None where the field is null or absent."""
        value = self.optional_string(obj, prefix, key)
        return None if value is None else self._file_name(prefix, key, value)

    def sha256(self, obj: Mapping[str, Any], prefix: str, key: str) -> str:
        value = self.get(obj, prefix, key)
        if not isinstance(value, str) or not _SHA256.fullmatch(value.lower()):
            raise self.fail(prefix + key, f"must be a SHA-256 hex digest (64 hex digits), got {_show(value)}")
        return value.lower()

    def sha256_or_null(self, obj: Mapping[str, Any], prefix: str, key: str) -> str | None:
        """A SHA-256 digest or null; the field itself is required."""
        return None if self.get(obj, prefix, key) is None else self.sha256(obj, prefix, key)


def _is_plain_name(name: str) -> bool:
    return name not in (".", "..") and "/" not in name and "\\" not in name and "\0" not in name and ":" not in name


def _diffusion_steps(c: _Checker, dif: Mapping[str, Any]) -> int:
    value = c.integer(dif, "diffusion.", "T", lo=1, what="a positive integer")
    if value > MAX_T:  # a schedule of 10**12 steps cannot be allocated; 10**100 is not even a size
        raise c.fail("diffusion.T", f"must be at most {MAX_T} (the most steps a schedule can hold), got {_show(value)}")
    return value


def _vocabulary(c: _Checker, data: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The optional `vocabulary`: a list of lowercase single words (repeats dropped); None if absent or null."""
    value = data.get("vocabulary")
    if value is None:
        return None
    if not isinstance(value, list):
        raise c.fail("vocabulary", f"must be a list of lowercase words or null, got {_show(value)}")
    if len(value) > MAX_VOCABULARY:
        raise c.fail("vocabulary", f"must hold at most {MAX_VOCABULARY:,} words, got {len(value):,}")
    for i, word in enumerate(value):
        if not isinstance(word, str) or not 0 < len(word) <= MAX_WORD_LENGTH:
            raise c.fail(f"vocabulary[{i}]", f"must be a word of 1 to {MAX_WORD_LENGTH} characters, got {_show(word)}")
        if words(word) != [word]:
            raise c.fail(f"vocabulary[{i}]", f"must be one lowercase word (letters, digits, an inner apostrophe), "
                         f"got {_show(word)}")
    return tuple(dict.fromkeys(value))


def _refuse_v2_fields(c: _Checker, obj: Mapping[str, Any], prefix: str, keys: tuple[str, ...], version: int) -> None:
    for key in keys:
        if version < 2 and key in obj:
            raise c.fail(prefix + key, f"needs format_version 2, but the document has format_version {version}")


def _image(c: _Checker, img: Mapping[str, Any], version: int) -> ImageSpec:
    lo, hi = (1, 4096) if version < 2 else (MIN_IMAGE_SIZE_V2, MAX_IMAGE_SIZE_V2)
    image = ImageSpec(
        size=c.integer(img, "image.", "size", lo=lo, hi=hi, what=f"an integer from {lo} to {hi}"),
        channels=c.integer(img, "image.", "channels", lo=1, hi=4, what="1, 3 or 4"),
    )
    if image.channels == 2:
        raise c.fail("image.channels", "must be 1, 3 or 4, got 2")
    return image


def _beta_end_value(c: _Checker, dif: Mapping[str, Any], key: str) -> float | None:
    if dif.get(key) is None:
        return None
    value = c.number(dif, "diffusion.", key)
    if not 0.0 < value < 1.0:
        raise c.fail("diffusion." + key, f"must be a number in (0, 1) or null, got {_show(dif[key])}")
    return value


def _diffusion(c: _Checker, dif: Mapping[str, Any], version: int) -> DiffusionSpec:
    _refuse_v2_fields(c, dif, "diffusion.", _V2_DIFFUSION, version)
    T = _diffusion_steps(c, dif)
    v1_schedules = [ScheduleKind.LINEAR.value, ScheduleKind.COSINE.value]
    schedules = [k.value for k in ScheduleKind] if version >= 2 else v1_schedules
    schedule = ScheduleKind(c.choice(dif, "diffusion.", "schedule", schedules))
    predictions = [k.value for k in PredictionKind] if version >= 2 else [PredictionKind.EPSILON.value]
    prediction = PredictionKind(c.choice(dif, "diffusion.", "prediction", predictions))
    beta_start, beta_end = _beta_end_value(c, dif, "beta_start"), _beta_end_value(c, dif, "beta_end")
    if (beta_start is None) != (beta_end is None):
        missing = "beta_end" if beta_end is None else "beta_start"
        raise c.fail("diffusion." + missing, "must be a number in (0, 1) when the other β end is given "
                     "(give both or neither)")
    if beta_start is not None and beta_end is not None:
        if schedule is ScheduleKind.COSINE:
            raise c.fail("diffusion.beta_start", "must be null for the cosine schedule (its β come from ᾱ(t))")
        if beta_start > beta_end:
            raise c.fail("diffusion.beta_start", f"must be at most diffusion.beta_end ({beta_end:g}), "
                         f"got {beta_start:g}")
    variance = VarianceKind.FIXED_LARGE
    if "variance" in dif:
        variance = VarianceKind(c.choice(dif, "diffusion.", "variance", [k.value for k in VarianceKind]))
    clip_sample = c.boolean(dif, "diffusion.", "clip_sample") if "clip_sample" in dif else True
    clip_range = 1.0
    if "clip_sample_range" in dif:
        clip_range = c.number(dif, "diffusion.", "clip_sample_range")
        if clip_range <= 0.0:
            raise c.fail("diffusion.clip_sample_range",
                         f"must be a positive number, got {_show(dif['clip_sample_range'])}")
    steps_offset = 0
    if "steps_offset" in dif:
        steps_offset = c.integer(dif, "diffusion.", "steps_offset", hi=T - 1,
                                 what=f"an integer from 0 to diffusion.T − 1 ({T - 1})")
    return DiffusionSpec(T=T, schedule=schedule, prediction=prediction, beta_start=beta_start, beta_end=beta_end,
                         variance=variance, clip_sample=clip_sample, clip_sample_range=clip_range,
                         steps_offset=steps_offset)


def _class_names(c: _Checker, co: Mapping[str, Any], num_classes: int) -> tuple[str, ...] | None:
    value = co.get("class_names")
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != num_classes:
        raise c.fail("conditioning.class_names", f"must be a list of {num_classes} names (one per class) or null, "
                     f"got {_show(value)}")
    for i, name in enumerate(value):
        if not isinstance(name, str) or not name.strip() or len(name) > 200:
            raise c.fail(f"conditioning.class_names[{i}]", f"must be a non-empty name of at most 200 characters, "
                         f"got {_show(name)}")
    return tuple(value)


def _conditioning(c: _Checker, co: Mapping[str, Any], version: int) -> ConditioningSpec:
    _refuse_v2_fields(c, co, "conditioning.", _V2_CONDITIONING, version)
    kind = ConditioningKind.TEXT
    if "kind" in co:
        kind = ConditioningKind(c.choice(co, "conditioning.", "kind", [k.value for k in ConditioningKind]))
    allowed = {"kind", *({ConditioningKind.TEXT: _TEXT_FIELDS, ConditioningKind.CLASS: ("num_classes", "class_names"),
                          ConditioningKind.NONE: ()}[kind])}
    if kind is not ConditioningKind.TEXT:  # a text kind ignores unknown keys, as format 1 did
        for key in co:
            if key not in allowed:
                raise c.fail("conditioning." + key, f"does not belong to conditioning kind {kind.value!r}")
    else:
        for key in ("num_classes", "class_names"):
            if key in co:
                raise c.fail("conditioning." + key, "does not belong to conditioning kind 'text'")
    if kind is ConditioningKind.NONE:
        return ConditioningSpec(kind=kind)
    if kind is ConditioningKind.CLASS:
        n = c.integer(co, "conditioning.", "num_classes", lo=1, hi=MAX_CLASSES,
                      what=f"an integer from 1 to {MAX_CLASSES}")
        return ConditioningSpec(kind=kind, num_classes=n, class_names=_class_names(c, co, n))
    text_encoder = c.string(co, "conditioning.", "text_encoder")
    if text_encoder != SHARED_TEXT_ENCODER and not _is_plain_name(text_encoder):
        raise c.fail("conditioning.text_encoder",
                     f"must be 'shared' or a file name inside the bundle folder, got {_show(text_encoder)}")
    encoder_kind = tokenizer = pad_token_id = None
    if co.get("text_encoder_kind") is not None:
        encoder_kind = c.choice(co, "conditioning.", "text_encoder_kind", list(TEXT_ENCODER_KINDS))
        if text_encoder == SHARED_TEXT_ENCODER:
            raise c.fail("conditioning.text_encoder", f"must be a file inside the bundle for text_encoder_kind "
                         f"{encoder_kind!r}, got 'shared'")
        tokenizer = c.file_name(co, "conditioning.", "tokenizer")
        pad_token_id = c.integer(co, "conditioning.", "pad_token_id")
    else:
        for key in ("tokenizer", "pad_token_id"):
            if co.get(key) is not None:
                raise c.fail("conditioning." + key, "needs conditioning.text_encoder_kind (an imported text encoder)")
    return ConditioningSpec(
        text_encoder=text_encoder,
        max_tokens=c.integer(co, "conditioning.", "max_tokens", lo=2, hi=512, what="an integer from 2 to 512"),
        embedding_dim=c.integer(co, "conditioning.", "embedding_dim", lo=1, what="a positive integer"),
        text_encoder_sha256=c.sha256_or_null(co, "conditioning.", "text_encoder_sha256"),
        tokenizer_sha256=c.sha256_or_null(co, "conditioning.", "tokenizer_sha256"),
        text_encoder_kind=encoder_kind, tokenizer=tokenizer, pad_token_id=pad_token_id,
    )


def _preview(c: _Checker, la: Mapping[str, Any], channels: int) -> tuple[tuple[tuple[float, ...], ...] | None,
                                                                          tuple[float, float, float] | None]:
    if la.get("preview") is None:
        return None, None
    pv = c.obj(la, "latent.", "preview")
    matrix, bias = c.get(pv, "latent.preview.", "matrix"), c.get(pv, "latent.preview.", "bias")
    if not isinstance(matrix, list) or len(matrix) != 3 or not all(isinstance(r, list) and len(r) == channels
                                                                    for r in matrix):
        raise c.fail("latent.preview.matrix", f"must be 3 rows of {channels} numbers (RGB from the latent "
                     f"channels), got {_show(matrix)}")
    if not isinstance(bias, list) or len(bias) != 3:
        raise c.fail("latent.preview.bias", f"must be 3 numbers (R, G, B), got {_show(bias)}")
    for name, values in [*((f"latent.preview.matrix[{i}]", r) for i, r in enumerate(matrix)),
                         ("latent.preview.bias", bias)]:
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) < float("inf")
                   for v in values):
            raise c.fail(name, f"must hold finite numbers, got {_show(values)}")
    rows = tuple(tuple(float(v) for v in row) for row in matrix)
    return rows, (float(bias[0]), float(bias[1]), float(bias[2]))


def _latent(c: _Checker, data: Mapping[str, Any], version: int, image: ImageSpec) -> LatentSpec | None:
    """The optional `latent` block (format 2): None for pixel-space bundles."""
    if data.get("latent") is None:
        return None
    if version < 2:
        raise c.fail("latent", f"needs format_version 2, but the document has format_version {version}")
    la = c.obj(data, "", "latent")
    channels = c.integer(la, "latent.", "channels", lo=1, hi=MAX_LATENT_CHANNELS,
                         what=f"an integer from 1 to {MAX_LATENT_CHANNELS}")
    factor = c.get(la, "latent.", "factor")
    if factor not in LATENT_FACTORS or isinstance(factor, bool):
        raise c.fail("latent.factor", f"must be one of {', '.join(map(str, LATENT_FACTORS))} (the VAE's "
                     f"downsampling), got {_show(factor)}")
    if image.size % factor:
        raise c.fail("image.size", f"must be a multiple of latent.factor ({factor}) in a latent bundle, "
                     f"got {image.size}")
    scaling = c.number(la, "latent.", "scaling_factor")
    if scaling <= 0.0:
        raise c.fail("latent.scaling_factor", f"must be a positive number, got {_show(la['scaling_factor'])}")
    matrix, bias = _preview(c, la, channels)
    return LatentSpec(channels=channels, factor=int(factor), scaling_factor=scaling,
                      vae_decoder=c.file_name(la, "latent.", "vae_decoder"),
                      vae_encoder=c.optional_file_name(la, "latent.", "vae_encoder"),
                      preview_matrix=matrix, preview_bias=bias)


def parse_model_json(data: Any, where: str = MODEL_JSON) -> BundleSpec:
    """Validate a model.json object and build the BundleSpec; BundleError names the bad field."""
    c = _Checker(where)
    if not isinstance(data, dict):
        raise BundleError(f"{where}: must hold a JSON object, got {type(data).__name__}.")
    if c.get(data, "", "format") != FORMAT:
        raise c.fail("format", f"must be {FORMAT!r}, got {_show(data['format'])}")
    version = c.integer(data, "", "format_version", lo=1, what="a positive integer")
    if version > FORMAT_VERSION:
        raise c.fail("format_version",
                     f"is {version}, newer than this app supports ({FORMAT_VERSION}); update Diffusion Studio")
    name = c.string(data, "", "name")

    image = _image(c, c.obj(data, "", "image"), version)
    diffusion = _diffusion(c, c.obj(data, "", "diffusion"), version)
    sd = c.obj(data, "", "sampler_defaults")
    sampler_defaults = SamplerDefaults(
        sampler=SamplerKind(c.choice(sd, "sampler_defaults.", "sampler", [k.value for k in SamplerKind])),
        steps=c.integer(sd, "sampler_defaults.", "steps", lo=1, hi=diffusion.T,
                    what=f"an integer from 1 to diffusion.T ({diffusion.T})"),
        guidance=c.number(sd, "sampler_defaults.", "guidance", hi=GUIDANCE_MAX),
    )
    un = c.obj(data, "", "unet")
    unet = UNetSpec(
        file=c.file_name(un, "unet.", "file"),
        fp16_file=c.optional_file_name(un, "unet.", "fp16_file"),
        opset=c.integer(un, "unet.", "opset", lo=7, what="an integer >= 7"),
        parameters=c.integer(un, "unet.", "parameters"),
        flops_per_forward=c.integer(un, "unet.", "flops_per_forward"),
    )
    conditioning = _conditioning(c, c.obj(data, "", "conditioning"), version)
    pr = c.obj(data, "", "provenance", default={})
    known = {"run", "step", "weights", "metrics", "exporter"}
    provenance = Provenance(
        run=c.optional_string(pr, "provenance.", "run"),
        step=c.optional_integer(pr, "provenance.", "step"),
        weights=c.optional_string(pr, "provenance.", "weights"),
        metrics=dict(c.obj(pr, "provenance.", "metrics", default={})),
        exporter=c.optional_string(pr, "provenance.", "exporter"),
        extra={k: v for k, v in pr.items() if k not in known},
    )
    fi = c.obj(data, "", "files", default={})
    files: dict[str, dict[str, Any]] = {}
    for fname in fi:
        if not _is_plain_name(fname):
            raise c.fail(f"files.{fname}", "must name a file inside the bundle folder")
        e = c.obj(fi, "files.", fname)
        files[fname] = {
            "sha256": c.sha256(e, f"files.{fname}.", "sha256"),
            "bytes": c.integer(e, f"files.{fname}.", "bytes"),
        }
    return BundleSpec(
        name=name, image=image, diffusion=diffusion, sampler_defaults=sampler_defaults, unet=unet,
        conditioning=conditioning, provenance=provenance, files=files, format_version=version,
        vocabulary=_vocabulary(c, data), latent=_latent(c, data, version, image),
    )


def _model_json_path(folder: str | os.PathLike[str]) -> Path:
    path = Path(folder)
    return path if path.name == MODEL_JSON and not path.is_dir() else path / MODEL_JSON


def bundle_path(folder: str | os.PathLike[str], name: str, what: str = "") -> Path:
    """The resolved path of the bundle file `name`; BundleError if it leaves the bundle folder.

    Symlinks are followed: a link to a file outside the folder (or to /etc/passwd) is refused
    before anything opens it; a link to another file inside the folder is accepted.
    """
    return resolve_inside(folder, name, what or f"the bundle file {name!r}", error=BundleError)


def read_model_json(folder: str | os.PathLike[str]) -> BundleSpec:
    """Read and validate `<folder>/model.json` (a path to model.json itself is accepted too).

    The file must resolve inside its folder; it is read with `read_json_file`, so a deep, huge,
    non-UTF-8 or non-JSON file is one BundleError sentence.
    """
    path = _model_json_path(folder)
    if not path.parent.is_dir():
        raise BundleError(f"model bundle {str(path.parent)!r} does not exist or is not a folder.")
    if not os.path.lexists(path):
        raise BundleError(f"{str(path.parent)!r} is not a model bundle: it has no {MODEL_JSON}.")
    resolved = bundle_path(path.parent, MODEL_JSON, f"the bundle's {MODEL_JSON}")
    data = read_json_file(resolved, error=BundleError)
    return parse_model_json(data, str(path))


def write_model_json(folder: str | os.PathLike[str], spec: BundleSpec) -> Path:
    """Write `<folder>/model.json` atomically (pretty-printed, UTF-8)."""
    text = json.dumps(spec.to_dict(), indent=2, ensure_ascii=False) + "\n"
    return atomic_write_text(Path(folder) / MODEL_JSON, text)
