"""Load a model bundle folder onto ONNX Runtime, checking every file against model.json.

Each way a bundle can be wrong is one `BundleError` sentence: a missing or wrong folder,
model.json (field checks in core.bundle), a missing or altered file (sha256), bytes that
are not ONNX, graph inputs/outputs whose names, dtypes or fixed dims disagree with
model.json, and a text encoder other than the one the U-Net was trained with.

The graph's inputs follow the bundle's conditioning kind (model.json format 2): text takes
x, t, context, context_mask and answers `eps`; class takes x, t, class_labels and none x, t,
both answering `model_output`. The output has C channels, 2C with a learned variance.

Every file is confined by its resolved path (`core.bundle.bundle_path`): model.json, the
U-Nets and a bundle-local text encoder may be symlinks only to files inside the bundle
folder; one that leads outside is refused before it is opened, read or hashed.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnxruntime as ort

from diffusion_studio import paths
from diffusion_studio.core.bundle import BundleSpec, ConditioningKind, bundle_path, read_model_json
from diffusion_studio.core.files import sha256_file
from diffusion_studio.core.prediction import PredictionKind, VarianceKind, output_channels
from diffusion_studio.core.schedule import Schedule, make_schedule
from diffusion_studio.errors import BundleError, UsageError
from diffusion_studio.inference.providers import CUDA, ProviderInfo, check_device, create_session, cuda_unusable_reason
from diffusion_studio.inference.session import (
    CLASS_INPUT_NAMES,
    INPUT_NAMES,
    MODEL_OUTPUT_NAME,
    OUTPUT_NAME,
    OrtDenoiser,
)
from diffusion_studio.inference.text_encoder import ENCODER_FILE, INFO_FILE, TOKENIZER_FILE, TextEncoder
from diffusion_studio.paths import text_encoder_dir

MODEL_JSON = "model.json"
HASH_LENGTH = 10


def default_bundle_path() -> Path:
    """The bundled default model (resources/models/shapes)."""
    return paths.default_model_dir()


@dataclass
class LoadedBundle:
    """A validated bundle with its sessions: everything a `Pipeline` needs."""

    spec: BundleSpec
    folder: Path
    # The U-Net session (fp16 on CUDA when declared, with an fp32 fallback):
    # denoiser(x, t, context=None, context_mask=None, class_labels=None) -> raw output [N, C or 2C, H, W].
    denoiser: OrtDenoiser
    text_encoder: TextEncoder | None  # None unless conditioning_kind is text
    schedule: Schedule
    model_hash: str  # first 10 hex digits of unet.onnx's sha256 (as in A1111 "Model hash")

    @property
    def provider_info(self) -> ProviderInfo:
        return self.denoiser.provider_info  # live: reflects an fp16 -> fp32 switch

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def image_size(self) -> int:
        return self.spec.image_size

    @property
    def channels(self) -> int:
        return self.spec.channels

    @property
    def T(self) -> int:
        return self.spec.T

    @property
    def max_tokens(self) -> int:
        return self.spec.max_tokens

    @property
    def conditioning_kind(self) -> ConditioningKind:
        """text (prompts), class (a class label per image) or none (unconditional)."""
        return self.spec.conditioning.kind

    @property
    def num_classes(self) -> int | None:
        return self.spec.conditioning.num_classes

    @property
    def class_names(self) -> tuple[str, ...] | None:
        return self.spec.conditioning.class_names

    @property
    def prediction(self) -> PredictionKind:
        return self.spec.diffusion.prediction

    @property
    def variance(self) -> VarianceKind:
        return self.spec.diffusion.variance

    @property
    def default_sampler(self) -> str:
        return str(getattr(self.spec.sampler, "value", self.spec.sampler))

    @property
    def default_steps(self) -> int:
        return self.spec.steps

    @property
    def default_guidance(self) -> float:
        return self.spec.guidance

    @property
    def vocabulary(self) -> tuple[str, ...] | None:
        """The words the model's training captions used (model.json `vocabulary`); None: not declared."""
        return self.spec.vocabulary


# --- files -----------------------------------------------------------------------------------


def _is_default(path: Path) -> bool:
    try:
        return path.resolve() == default_bundle_path().resolve()
    except OSError:
        return False


def _check_folder(path: Path) -> Path:
    if _is_default(path) and not (path / MODEL_JSON).is_file():
        raise BundleError(
            f"The default model is not installed at {path}; pass --model BUNDLE (or reinstall Diffusion Studio)."
        )
    if not path.exists():
        raise BundleError(f"The model bundle {path} does not exist.")
    if not path.is_dir():
        raise BundleError(f"The model bundle {path} is not a folder (a bundle is a folder with model.json).")
    if not os.path.lexists(path / MODEL_JSON):  # a symlink is judged by read_model_json (confinement)
        raise BundleError(f"The folder {path} is not a model bundle: it has no {MODEL_JSON}.")
    return path


def _checked_file(folder: Path, name: str, files: dict[str, Any], what: str) -> tuple[Path, str]:
    """The file's path and sha256, after checking it exists and matches model.json `files`."""
    if Path(name).name != name:
        raise BundleError(f"model.json names the {what} {name!r}, which is not a file name inside the bundle.")
    path = bundle_path(folder, name, f"the {what} {name!r}")  # resolved; refused if it leaves the folder
    if not path.is_file():
        raise BundleError(f"The bundle {folder} lacks its {what} {name} (named in model.json).")
    facts = files.get(name)
    if not isinstance(facts, dict) or not isinstance(facts.get("sha256"), str):
        raise BundleError(f"{folder / MODEL_JSON} lists no sha256 for {name} under 'files'.")
    size = path.stat().st_size
    expected_size = facts.get("bytes")
    if isinstance(expected_size, int) and not isinstance(expected_size, bool) and size != expected_size:
        raise BundleError(
            f"{path} has {size} bytes but model.json says {expected_size}, so it is truncated or was replaced."
        )
    digest = sha256_file(path)
    if digest != facts["sha256"].lower():
        raise BundleError(f"{path} does not match its sha256 in model.json, so it is corrupt or was replaced.")
    return path, digest


# --- graphs ----------------------------------------------------------------------------------


def _dims_text(shape: list[Any]) -> str:
    return "[" + ", ".join(str(d) if isinstance(d, int) else "N" for d in shape) + "]"


def _expected_io(spec: BundleSpec) -> tuple[dict[str, tuple[tuple[str, ...], list[int]]], str, str]:
    """{input name: (dtypes, fixed dims)}, the output's name and what the kind's inputs are, in words."""
    c, s = spec.channels, spec.image_size
    float_types = ("tensor(float)", "tensor(float16)")
    int64 = ("tensor(int64)",)
    kind = spec.conditioning.kind
    if kind is ConditioningKind.TEXT:
        L, D = spec.max_tokens, spec.embedding_dim
        expected = {"x": (float_types, [c, s, s]), "t": (int64, []),
                    "context": (float_types, [L, D]), "context_mask": (float_types, [L])}
        return {n: expected[n] for n in INPUT_NAMES}, OUTPUT_NAME, "x, t, context, context_mask"
    if kind is ConditioningKind.CLASS:
        expected = {"x": (float_types, [c, s, s]), "t": (int64, []), "class_labels": (int64, [])}
        return {n: expected[n] for n in CLASS_INPUT_NAMES}, MODEL_OUTPUT_NAME, "x, t, class_labels"
    return {"x": (float_types, [c, s, s]), "t": (int64, [])}, MODEL_OUTPUT_NAME, "x, t"


def check_graph(session: ort.InferenceSession, spec: BundleSpec, label: str) -> None:
    """Check the U-Net graph's input/output names, dtypes and fixed dims against model.json."""
    c, s = spec.channels, spec.image_size
    kind = spec.conditioning.kind.value
    expected, output_name, listed = _expected_io(spec)
    inputs = {arg.name: arg for arg in session.get_inputs()}
    if set(inputs) != set(expected):
        raise BundleError(
            f"{label} has inputs {sorted(inputs)}, but a U-Net must take exactly {listed} "
            f"(conditioning kind {kind!r})."
        )
    outputs = [arg.name for arg in session.get_outputs()]
    if outputs[:1] != [output_name]:
        raise BundleError(f"{label} has outputs {outputs}, but a U-Net's first output must be {output_name!r}.")
    out_c = output_channels(c, spec.variance)  # 2C with a learned variance
    float_types = ("tensor(float)", "tensor(float16)")
    args = [*(inputs[name] for name in expected), session.get_outputs()[0]]
    wanted = [*expected.values(), (float_types, [out_c, s, s])]
    for arg, (dtypes, dims) in zip(args, wanted):
        if arg.type not in dtypes:
            raise BundleError(f"{label}: {arg.name} has type {arg.type}, but model.json needs {dtypes[0]}.")
        shape = list(arg.shape)
        expected_shape = ["N", *dims]
        if len(shape) != len(expected_shape):
            raise BundleError(
                f"{label}: {arg.name} has shape {_dims_text(shape)}, but model.json needs {_dims_text(expected_shape)}."
            )
        if isinstance(shape[0], int):
            raise BundleError(f"{label}: the batch axis of {arg.name} is fixed to {shape[0]}, but it must be dynamic.")
        for got, want in zip(shape[1:], dims):
            if got != want and not (arg.name == output_name and not isinstance(got, int)):
                text = f"{spec.max_tokens} tokens of {spec.embedding_dim}" if kind == "text" else f"kind {kind}"
                channels = f"{c} channels" + (f", {out_c} output channels" if out_c != c else "")
                raise BundleError(
                    f"{label}: {arg.name} has shape {_dims_text(shape)}, but model.json needs "
                    f"{_dims_text(expected_shape)} (image size {s}, {channels}, {text})."
                )


def _open_unet(path: Path, spec: BundleSpec, device: str) -> tuple[ort.InferenceSession, ProviderInfo]:
    try:
        session, info = create_session(path, device)
    except UsageError:
        raise
    except Exception as exc:  # onnxruntime raises InvalidProtobuf, Fail, InvalidGraph, ...
        raise BundleError(f"The U-Net file {path} is not a valid ONNX model ({_first_line(exc)}).") from exc
    check_graph(session, spec, path.name)
    return session, info


def _first_line(exc: BaseException) -> str:
    """onnxruntime's reason without its "[ONNXRuntimeError] : 7 : INVALID_PROTOBUF :" and path prefix."""
    text = " ".join(str(exc).split())
    text = re.sub(r"^\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*\w+\s*:\s*", "", text)
    text = re.sub(r"^Load model from .*? failed:\s*", "", text)
    return (text[:120] + "…" if len(text) > 120 else text).rstrip(".")


# --- text encoder ----------------------------------------------------------------------------

_ENCODERS: dict[tuple[str, int, int, float], TextEncoder] = {}
_ENCODERS_LOCK = threading.Lock()


def _text_encoder(folder: Path, spec: BundleSpec) -> TextEncoder:
    choice = spec.text_encoder
    if choice == "shared":
        directory = text_encoder_dir()
        where = f"the shared text encoder in {directory}"
    elif choice == ENCODER_FILE:
        directory = folder
        where = f"the bundle's text encoder in {folder}"
        for name in (ENCODER_FILE, TOKENIZER_FILE, INFO_FILE):  # refused before anything reads them
            bundle_path(folder, name, f"the text encoder file {name!r}")
    else:
        raise BundleError(
            f"model.json names the text encoder {choice!r}; use 'shared' or {ENCODER_FILE!r} (with {TOKENIZER_FILE})."
        )
    for name in (ENCODER_FILE, TOKENIZER_FILE):
        if not (directory / name).is_file():
            raise BundleError(f"The model needs {where}, but {directory / name} is missing.")
    stat = (directory / ENCODER_FILE).stat()
    key = (str(directory.resolve()), spec.max_tokens, stat.st_size, stat.st_mtime)
    with _ENCODERS_LOCK:
        encoder = _ENCODERS.get(key)
        if encoder is None:
            encoder = TextEncoder(directory, max_tokens=spec.max_tokens, confine=choice != "shared")
            _ENCODERS[key] = encoder
    if spec.text_encoder_sha256 and encoder.sha256 != spec.text_encoder_sha256.lower():
        raise BundleError(
            f"The text encoder {directory / ENCODER_FILE} is not the one this model was trained with (sha256 mismatch)."
        )
    if spec.tokenizer_sha256 and encoder.tokenizer_sha256 != spec.tokenizer_sha256.lower():
        raise BundleError(
            f"The tokenizer {directory / TOKENIZER_FILE} is not the one this model was trained with (sha256 mismatch)."
        )
    if encoder.embedding_dim != spec.embedding_dim:
        raise BundleError(
            f"The text encoder gives {encoder.embedding_dim}-dim embeddings, but model.json says {spec.embedding_dim}."
        )
    return encoder


# --- loading ---------------------------------------------------------------------------------


def prefer_fp16(spec: BundleSpec, device: str) -> bool:
    """Whether to run the bundle's fp16 U-Net: only when declared and CUDA can load.

    On the CPU fp16 kernels are missing or slower than fp32, so the fp32 graph runs there.
    """
    return bool(spec.unet_fp16_file) and check_device(device) != "cpu" and cuda_unusable_reason() is None


def _schedule(spec: BundleSpec) -> Schedule:
    d = spec.diffusion
    try:
        return make_schedule(d.schedule, d.T, d.beta_start, d.beta_end)
    except UsageError as exc:  # model.json passed its own checks, so this names a schedule problem
        raise BundleError(f"model.json: the diffusion schedule cannot be built ({exc}).") from exc


def load_bundle(path: str | os.PathLike[str] | None = None, device: str = "auto") -> LoadedBundle:
    """Validate a bundle folder and open its sessions; `None` loads the bundled default model."""
    device = check_device(device)
    folder = _check_folder(Path(path) if path is not None else default_bundle_path())
    spec = read_model_json(folder / MODEL_JSON)
    files = dict(spec.files)
    unet_path, unet_sha = _checked_file(folder, spec.unet_file, files, "U-Net file")
    fp16_path = None
    if spec.unet_fp16_file:
        fp16_path, _ = _checked_file(folder, spec.unet_fp16_file, files, "fp16 U-Net file")
    text_encoder = _text_encoder(folder, spec) if spec.conditioning.kind is ConditioningKind.TEXT else None

    denoiser = None
    if fp16_path is not None and prefer_fp16(spec, device):
        session, info = _open_unet(fp16_path, spec, device)
        if info.active == CUDA:

            def open_fp32() -> tuple[ort.InferenceSession, ProviderInfo]:
                return _open_unet(unet_path, spec, device)

            denoiser = OrtDenoiser(session, info, fp32_fallback=open_fp32)
    if denoiser is None:
        session, info = _open_unet(unet_path, spec, device)
        denoiser = OrtDenoiser(session, info)
    return LoadedBundle(
        spec=spec,
        folder=folder.resolve(),
        denoiser=denoiser,
        text_encoder=text_encoder,
        schedule=_schedule(spec),
        model_hash=unet_sha[:HASH_LENGTH],
    )
