"""`python -m exporter diffusers SRC --out BUNDLE` for a saved StableDiffusionPipeline folder (latent diffusion).

Latent diffusion (Rombach et al. 2022) runs DDPM on the latents z of a KL autoencoder, x ≈ D(z),
conditioned on a CLIP text encoder's last hidden states through cross-attention. The bundle holds
five graphs and files (docs/design.md "The model bundle", latent bundles):

- text_encoder.onnx: input_ids int64 [N,L] -> last_hidden_state [N,L,D] (CLIPTextModel);
- unet.onnx: x [N,C,h,w], t int64 [N] (the paper's t; the graph feeds t − 1), context [N,L,D]
  -> model_output (UNet2DConditionModel's ε̂ or v̂);
- vae_decoder.onnx: latent [N,C,h,w], ALREADY divided by the scaling factor -> image [N,3,H,W];
- vae_encoder.onnx: image [N,3,H,W] in [−1,1] -> latent_mean, the posterior mean (unscaled);
- tokenizer.json: the CLIP tokenizer (inference.clip_tokenizer), padding to max_length.

model.json's `latent` block carries the channels, the factor 2^(len(block_out_channels)−1), the
scaling factor and a 3 × C preview map fitted here by least squares (core.latent_preview).
Each component is compared with diffusers/transformers in PyTorch (validation.json); the bundle
is staged, checked and swapped in like every import (exporter.diffusers_import).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from diffusion_studio.core.bundle import MAX_IMAGE_SIZE_V2, MIN_IMAGE_SIZE_V2, parse_model_json
from diffusion_studio.core.latent_preview import fit_preview
from diffusion_studio.errors import BundleError, UsageError
from exporter import bundle_writer as bw
from exporter.diffusers_source import (
    CONFIG,
    MODEL_INDEX,
    SCHEDULER_CONFIG,
    SCHEDULERS,
    _int,
    _read_config,
    _refuse,
    _show,
    map_scheduler,
)
from exporter.parity import PARITY_BOUND, record_report, start_report
from exporter.unet_export import (
    TORCHSCRIPT,
    GraphSpec,
    _quiet,
    check_graph,
    export_unet,
    save_fp16,
    save_model,
    stamp_metadata,
)

LATENT_PIPELINES = ("StableDiffusionPipeline",)
# Schedulers whose config only describes the training chain (β schedule, T, prediction): the
# sampler is ours. The DDPM family is mapped as for pixel models; the others' own sampling
# rules (Euler, LMS, DPM-Solver …) are a diffusers choice the studio's samplers replace.
SAMPLING_ONLY_SCHEDULERS = ("EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler", "LMSDiscreteScheduler",
                            "DPMSolverMultistepScheduler", "DPMSolverSinglestepScheduler", "HeunDiscreteScheduler",
                            "KDPM2DiscreteScheduler", "KDPM2AncestralDiscreteScheduler", "UniPCMultistepScheduler",
                            "DEISMultistepScheduler")
TEXT_ENCODER_FILE, TOKENIZER_FILE = "text_encoder.onnx", "tokenizer.json"
VAE_DECODER_FILE, VAE_ENCODER_FILE = "vae_decoder.onnx", "vae_encoder.onnx"
# Parity bounds (max |Δ| fp32 ONNX Runtime vs PyTorch). The text encoder's hidden states are
# layer-normed (O(1)) and the U-Net's ε̂ is O(1): the training export's 1e-4. The VAE decoder's
# image is in [−1, 1], where one 8-bit level is 2/255 ≈ 7.8e-3: 1e-3 is an eighth of a level, and
# a 512² SD decoder (group norms over 512 channels, a mid-block attention over 4096 positions)
# accumulates float32 rounding well above 1e-4. The encoder's mean is unscaled (|z| up to ~30
# for SD's VAE), so its bound is relative: 1e-3 · max(1, max |z_ref|).
VAE_BOUND = 1e-3
TEXT_BATCHES, UNET_BATCHES, VAE_BATCHES = (1, 2), (1, 2), (1, 2)
INPUT_SEED = 20240611
PREVIEW_SAMPLES = 16
PREVIEW_SEED = 7
# protobuf cannot serialise one message of 2 GiB or more: SD's U-Net (860M parameters, 3.4 GB in
# float32) keeps its weights in unet.onnx.data beside unet.onnx (ONNX external data, one file).
EXTERNAL_DATA_BYTES = 1_800_000_000
UNET_DATA_FILE = "unet.onnx.data"
PREVIEW_FIT_SIDE = 16  # latent side of the fit's samples: the map is per pixel, so small decodes suffice (SD: 128²)
PARITY_PROMPTS = ("a photo of a red cat on the sky", "")
NO_CONTEXT_MASK_NOTE = "SD's U-Net attends to every one of the max_tokens CLIP positions (no context_mask)"
# UNet2DConditionModel options of other model families (SDXL, LCM, unCLIP, IP-adapters …).
_UNET_FOREIGN = ("addition_embed_type", "class_embed_type", "num_class_embeds", "time_cond_proj_dim",
                 "encoder_hid_dim_type", "encoder_hid_dim")


@dataclass
class LatentSource:
    """A loaded StableDiffusionPipeline folder (eval, float32, CPU) and what model.json needs about it."""

    path: Path
    unet: Any           # diffusers.UNet2DConditionModel
    vae: Any            # diffusers.AutoencoderKL
    text_encoder: Any   # transformers.CLIPTextModel
    tokenizer: Any      # tokenizers.Tokenizer (inference.clip_tokenizer)
    max_tokens: int
    pad_token_id: int
    text_dim: int
    channels: int       # latent channels C
    factor: int         # VAE downsampling: image = factor × latent
    latent_size: int
    scaling_factor: float
    diffusion: dict[str, Any]
    scheduler: str
    source_diffusers_version: str | None
    notes: list[str] = field(default_factory=list)

    @property
    def image_size(self) -> int:
        return self.latent_size * self.factor

    @property
    def T(self) -> int:
        return int(self.diffusion["T"])


def is_latent_pipeline(path: Path) -> bool:
    """True when `path` is a folder whose model_index.json names a latent-diffusion pipeline."""
    index = Path(path) / MODEL_INDEX
    if not index.is_file():
        return False
    try:
        data = _read_config(index, "pipeline")
    except UsageError:
        return False
    return data.get("_class_name") in LATENT_PIPELINES


# --- reading the folder ----------------------------------------------------------------------


def _component(path: Path, name: str, what: str) -> tuple[Path, dict[str, Any]]:
    folder = path / name
    if not folder.is_dir():
        raise UsageError(f"{path} has no {name}/ folder, so it is not a complete StableDiffusionPipeline "
                         f"(the {what} is missing).")
    return folder, _read_config(folder / CONFIG, what)


def _scheduler(path: Path, notes: list[str]) -> tuple[dict[str, Any], str]:
    where = path / "scheduler" / SCHEDULER_CONFIG
    cfg = _read_config(where, "scheduler")
    cls = str(cfg.get("_class_name", "PNDMScheduler"))
    if cls not in (*SCHEDULERS, *SAMPLING_ONLY_SCHEDULERS):
        raise _refuse(str(where), "_class_name", f"is {_show(cls)}, which is not a DDPM-family scheduler "
                      "(discrete timesteps with a β schedule); it cannot be imported")
    mapped = dict(cfg)
    if cls not in SCHEDULERS:
        notes.append(f"{cls}'s sampling rule is a diffusers choice; its β schedule, T and prediction are kept")
        mapped["_class_name"] = "DDIMScheduler"
        mapped.pop("variance_type", None)
    # Latents are never clipped to ±1 (PNDM and the k-diffusion schedulers do not clip; SD's DDIM says false).
    mapped.setdefault("clip_sample", False)
    sub: list[str] = []
    diffusion = map_scheduler(mapped, str(where), sub)
    notes.extend(n for n in sub if "timestep_spacing" not in n and "no variance_type" not in n)
    offset = _int(cfg, "steps_offset", 0, str(where), 0, diffusion["T"] - 1)
    diffusion["steps_offset"] = offset
    return diffusion, cls


def _check_unet(cfg: dict[str, Any], where: str) -> tuple[int, int, int]:
    """(latent channels, latent size, cross-attention dim) of a supported UNet2DConditionModel config."""
    cls = cfg.get("_class_name")
    if cls != "UNet2DConditionModel":
        raise _refuse(where, "_class_name", f"is {_show(cls)}; a Stable Diffusion U-Net is a UNet2DConditionModel")
    for key in _UNET_FOREIGN:
        if cfg.get(key) is not None:
            raise _refuse(where, key, f"is {_show(cfg[key])}; only plain text-conditioned U-Nets (Stable Diffusion "
                          "1.x/2.x) are supported, so it must be null")
    size = cfg.get("sample_size")
    if isinstance(size, list) and len(size) == 2 and size[0] == size[1]:
        size = size[0]
    size = _int({"sample_size": size}, "sample_size", None, where, 1, MAX_IMAGE_SIZE_V2)
    channels = _int(cfg, "in_channels", 4, where, 1, 16)
    out = _int(cfg, "out_channels", 4, where, 1, 16)
    if out != channels:
        raise _refuse(where, "out_channels", f"is {out}, but in_channels is {channels} (an inpainting or "
                      "learned-variance U-Net, which is not supported)")
    dim = cfg.get("cross_attention_dim")
    if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
        raise _refuse(where, "cross_attention_dim", f"must be one positive integer, got {_show(dim)}")
    return channels, size, dim


def _check_vae(cfg: dict[str, Any], where: str, channels: int) -> tuple[int, float]:
    """(factor, scaling factor) of a supported AutoencoderKL config with `channels` latent channels."""
    if cfg.get("_class_name") != "AutoencoderKL":
        raise _refuse(where, "_class_name", f"is {_show(cfg.get('_class_name'))}; only AutoencoderKL is supported")
    latent = _int(cfg, "latent_channels", 4, where, 1, 16)
    if latent != channels:
        raise _refuse(where, "latent_channels", f"is {latent}, but the U-Net takes {channels} channels")
    for key in ("shift_factor", "latents_mean", "latents_std"):
        if cfg.get(key) is not None:
            raise _refuse(where, key, "is set (a latent shift of a newer model family), which is not supported")
    if _int(cfg, "in_channels", 3, where, 1, 4) != 3 or _int(cfg, "out_channels", 3, where, 1, 4) != 3:
        raise _refuse(where, "out_channels", "and in_channels must be 3 (RGB)")
    blocks = cfg.get("block_out_channels", [64])
    if not isinstance(blocks, list) or not 1 <= len(blocks) <= 6:
        raise _refuse(where, "block_out_channels", f"must be a list of 1 to 6 widths, got {_show(blocks)}")
    scaling = cfg.get("scaling_factor", 0.18215)
    if isinstance(scaling, bool) or not isinstance(scaling, (int, float)) or not 0 < scaling < 1e3:
        raise _refuse(where, "scaling_factor", f"must be a positive number, got {_show(scaling)}")
    return 2 ** (len(blocks) - 1), float(scaling)


def _check_text_encoder(cfg: dict[str, Any], where: str, dim: int) -> int:
    """The CLIP text model's maximum positions; UsageError unless it is a CLIPTextModel of width `dim`."""
    kind = cfg.get("model_type")
    archs = cfg.get("architectures") or []
    if kind != "clip_text_model" or not any(a in ("CLIPTextModel", "CLIPTextModelWithProjection") for a in archs):
        raise _refuse(where, "model_type", f"is {_show(kind)} ({_show(archs)}); only CLIP text encoders "
                      "(CLIPTextModel) are supported")
    hidden = _int(cfg, "hidden_size", 512, where, 1, 1 << 16)
    if hidden != dim:
        raise _refuse(where, "hidden_size", f"is {hidden}, but the U-Net's cross_attention_dim is {dim}")
    return _int(cfg, "max_position_embeddings", 77, where, 2, 512)


def _tokenizer(path: Path, positions: int) -> tuple[Any, int, int]:
    from diffusion_studio.inference.clip_tokenizer import clip_tokenizer_from_folder, padding_of

    folder = path / "tokenizer"
    for name in ("vocab.json", "merges.txt"):
        if not (folder / name).is_file():
            raise UsageError(f"{folder / name} is missing; the CLIP tokenizer is built from tokenizer/vocab.json "
                             "and tokenizer/merges.txt.")
    try:
        tok = clip_tokenizer_from_folder(folder)
        length, pad = padding_of(tok)
    except BundleError as exc:
        raise UsageError(str(exc)) from exc
    if length > positions:
        raise UsageError(f"{folder}/tokenizer_config.json: model_max_length {length} is more than the text "
                         f"encoder's max_position_embeddings ({positions}).")
    return tok, length, pad


def _load(cls: Any, folder: Path, what: str) -> Any:
    """`cls.from_pretrained(folder)` in float32 and eval mode; one sentence when it cannot be read."""
    import torch
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    levels = diffusers_logging.get_verbosity(), transformers_logging.get_verbosity()
    try:  # the libraries' notes (accelerate, progress bars) stay out of our output
        diffusers_logging.set_verbosity_error()
        transformers_logging.set_verbosity_error()
        with _quiet(), contextlib.redirect_stderr(io.StringIO()):
            module = cls.from_pretrained(str(folder), torch_dtype=torch.float32)
    except Exception as exc:  # noqa: BLE001 - missing weights, shape mismatches, bad files: bad input
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise UsageError(f"The {what} in {folder} cannot be loaded ({type(exc).__name__}: {first}).") from exc
    finally:
        diffusers_logging.set_verbosity(levels[0])
        transformers_logging.set_verbosity(levels[1])
    module = module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    bad = next((n for n, p in module.named_parameters() if not torch.isfinite(p).all()), None)
    if bad is not None:
        raise UsageError(f"The {what} weights in {folder} contain NaN or Inf (first in {bad!r}).")
    return module


def load_latent_source(path: Path) -> LatentSource:
    """Read, check and load a StableDiffusionPipeline folder; UsageError (one sentence) for anything unsupported.

    Every config is checked before any weights are read.
    """
    path = Path(path)
    index = _read_config(path / MODEL_INDEX, "pipeline")
    if index.get("_class_name") not in LATENT_PIPELINES:
        raise _refuse(str(path / MODEL_INDEX), "_class_name", f"is {_show(index.get('_class_name'))}; the latent "
                      f"pipelines supported are {', '.join(LATENT_PIPELINES)}")
    notes: list[str] = []
    unet_dir, unet_cfg = _component(path, "unet", "U-Net")
    vae_dir, vae_cfg = _component(path, "vae", "VAE")
    text_dir, text_cfg = _component(path, "text_encoder", "text encoder")
    diffusion, scheduler = _scheduler(path, notes)
    channels, latent_size, dim = _check_unet(unet_cfg, str(unet_dir / CONFIG))
    factor, scaling = _check_vae(vae_cfg, str(vae_dir / CONFIG), channels)
    positions = _check_text_encoder(text_cfg, str(text_dir / CONFIG), dim)
    tok, max_tokens, pad_id = _tokenizer(path, positions)
    size = latent_size * factor
    if not MIN_IMAGE_SIZE_V2 <= size <= MAX_IMAGE_SIZE_V2:
        raise _refuse(str(unet_dir / CONFIG), "sample_size", f"is {latent_size}, which makes {size}-pixel images "
                      f"at the VAE's factor {factor}; supported are {MIN_IMAGE_SIZE_V2} to {MAX_IMAGE_SIZE_V2}")
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    unet = _load(UNet2DConditionModel, unet_dir, "U-Net")
    vae = _load(AutoencoderKL, vae_dir, "VAE")
    text_encoder = _load(CLIPTextModel, text_dir, "text encoder")
    version = unet_cfg.get("_diffusers_version")
    return LatentSource(path=path, unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tok,
                        max_tokens=max_tokens, pad_token_id=pad_id, text_dim=dim, channels=channels, factor=factor,
                        latent_size=latent_size, scaling_factor=scaling, diffusion=diffusion, scheduler=scheduler,
                        source_diffusers_version=version if isinstance(version, str) else None, notes=notes)


# --- the graphs ------------------------------------------------------------------------------


def wrap_unet(unet: Any) -> Any:
    """(x, t, context) -> unet(x, t − 1, encoder_hidden_states=context).sample (the paper's t is diffusers' t − 1)."""
    import torch

    class LatentUNet(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.unet = unet

        def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
            return self.unet(x, t - 1, encoder_hidden_states=context, return_dict=False)[0]

    return LatentUNet().eval()


def wrap_text_encoder(text_encoder: Any) -> Any:
    """input_ids -> last_hidden_state (no attention mask, as StableDiffusionPipeline calls CLIP)."""
    import torch

    class TextEncoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = text_encoder

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            return self.encoder(input_ids=input_ids, return_dict=False)[0]

    return TextEncoder().eval()


def wrap_vae_decoder(vae: Any) -> Any:
    """latent (already divided by the scaling factor) -> image in [−1, 1] (unclipped)."""
    import torch

    class Decoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.vae = vae

        def forward(self, latent: torch.Tensor) -> torch.Tensor:
            return self.vae.decode(latent, return_dict=False)[0]

    return Decoder().eval()


def wrap_vae_encoder(vae: Any) -> Any:
    """image in [−1, 1] -> the posterior mean of the latent (not scaled; the pipeline multiplies)."""
    import torch

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.vae = vae

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            return self.vae.encode(image, return_dict=False)[0].mean

    return Encoder().eval()


def _export(model: Any, example: Any, input_name: str, output_name: str, opset: int, spatial: bool = False) -> Any:
    """TorchScript export of a one-input, one-output module with a dynamic batch axis "N" (and, when
    `spatial`, dynamic height and width: the VAE is convolutional, any multiple of the factor), checked."""
    import onnx
    import torch

    axes = {0: "N", 2: "H", 3: "W"} if spatial else {0: "N"}
    buffer = io.BytesIO()
    with torch.no_grad(), _quiet():
        torch.onnx.export(model, (example,), buffer, input_names=[input_name],  # type: ignore[arg-type]
                          output_names=[output_name], opset_version=opset, dynamo=False, do_constant_folding=True,
                          dynamic_axes={input_name: axes, output_name: axes})
    proto = onnx.load_from_string(buffer.getvalue())
    for value in [*proto.graph.input, *proto.graph.output]:
        for index, label in axes.items():  # the same names on both sides (h, w of the latent or H, W of the image)
            dim = value.type.tensor_type.shape.dim[index]
            dim.Clear()
            dim.dim_param = f"{label}_{value.name}" if index else label
    for node in proto.graph.node:
        del node.metadata_props[:]
    check_graph(proto)
    return proto


def export_large_unet(model: Any, spec: GraphSpec, opset: int) -> Any:
    """The U-Net through the TorchScript exporter into a temp folder (it writes external data past
    2 GiB), loaded back with its weights; I/O fixed as export_unet does. Checked after saving."""
    import tempfile

    import onnx
    import torch

    from exporter.unet_export import _example_inputs, _fix_io

    with tempfile.TemporaryDirectory(prefix="unet-export-") as tmp, torch.no_grad(), _quiet():
        path = Path(tmp) / bw.UNET_FILE
        torch.onnx.export(model, _example_inputs(spec), str(path), input_names=list(spec.input_names),
                          output_names=[spec.output_name], opset_version=opset, dynamo=False,
                          do_constant_folding=True,
                          dynamic_axes={n: spec.dynamic_axes(n) for n in (*spec.input_names, spec.output_name)})
        proto = onnx.load(str(path), load_external_data=True)
    _fix_io(proto, spec)
    for node in proto.graph.node:
        del node.metadata_props[:]
    return proto


def save_unet(proto: Any, folder: Path, external: bool) -> list[str]:
    """Write unet.onnx (with unet.onnx.data when `external`) into the staged bundle, checked; the file names."""
    import onnx

    path = folder / bw.UNET_FILE
    if not external:
        save_model(proto, path)
        return [bw.UNET_FILE]
    onnx.save_model(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=UNET_DATA_FILE, size_threshold=1024)
    (folder / UNET_DATA_FILE).chmod(0o644)  # onnx creates it private; the bundle's files are world-readable
    onnx.checker.check_model(str(path), full_check=True)  # by path: the message alone may exceed 2 GiB
    return [bw.UNET_FILE, UNET_DATA_FILE]


# --- parity ----------------------------------------------------------------------------------


def _feeds(src: LatentSource, n: int) -> dict[str, np.ndarray]:
    from diffusion_studio.inference.clip_tokenizer import encode

    rng = np.random.default_rng(INPUT_SEED)
    h, s = src.latent_size, src.image_size
    prompts = [PARITY_PROMPTS[i % len(PARITY_PROMPTS)] for i in range(n)]
    return {
        "input_ids": np.asarray(encode(src.tokenizer, prompts), dtype=np.int64),
        "x": rng.standard_normal((n, src.channels, h, h)).astype(np.float32),
        "context": rng.standard_normal((n, src.max_tokens, src.text_dim)).astype(np.float32),
        "latent": (rng.standard_normal((n, src.channels, h, h)) / src.scaling_factor).astype(np.float32),
        "image": rng.uniform(-1.0, 1.0, (n, 3, s, s)).astype(np.float32),
    }


def second_size(src: LatentSource) -> tuple[int, int]:
    """A non-square latent (h, w) other than the default for the dynamic-size parity cases: the default
    height by 1.5× the width, rounded up to a multiple of the U-Net's downsampling 2^(levels − 1)."""
    step = unet_multiple(src)
    return src.latent_size, -(-(3 * src.latent_size // 2) // step) * step


def unet_multiple(src: LatentSource) -> int:
    """Latent sides the traced U-Net takes are multiples of 2^(levels − 1) (its skip connections must match)."""
    return int(2 ** (len(src.unet.config.block_out_channels) - 1))


def _second_feeds(src: LatentSource) -> dict[str, np.ndarray]:
    """One input per graph at second_size (batch 1), drawn like _feeds."""
    rng = np.random.default_rng(INPUT_SEED + 1)
    h, w = second_size(src)
    return {"x": rng.standard_normal((1, src.channels, h, w)).astype(np.float32),
            "latent": (rng.standard_normal((1, src.channels, h, w)) / src.scaling_factor).astype(np.float32),
            "image": rng.uniform(-1.0, 1.0, (1, 3, h * src.factor, w * src.factor)).astype(np.float32)}


def _torch(model: Any, *arrays: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return np.asarray(model(*(torch.from_numpy(a) for a in arrays)).numpy(), dtype=np.float64)


def _compare(got: Any, ref: np.ndarray) -> tuple[float, float, float]:
    """(max |Δ|, mean |Δ|, max |ref|); a NaN anywhere is an infinite difference."""
    diff = np.abs(np.asarray(got, dtype=np.float64) - ref)
    worst = float(diff.max()) if np.all(np.isfinite(diff)) else float("inf")
    return worst, float(diff.mean()), float(np.abs(ref).max())


FP16_FINITE_TIMESTEPS = 20  # t checked for NaN/Inf in the fp16 U-Net (evenly over 1…T; every t costs a U-Net call)


def _fp16_entry(runtime: Any, path: Path, src: LatentSource, models: dict[str, Any], base: dict[str, np.ndarray],
                t_values: list[int], failures: list[str]) -> dict[str, Any]:
    """The fp16 U-Net against the fp32 torch U-Net (reported, not gated) and finite at FP16_FINITE_TIMESTEPS t."""
    entry: dict[str, Any] = {"provider": runtime.provider, "file": path.name, "gated": False}
    try:
        session = runtime.open(path)
    except Exception as exc:  # noqa: BLE001 - not every provider has fp16 kernels
        entry["skipped"] = f"cannot run here: {(str(exc).strip().splitlines() or ['?'])[-1][:200]}"
        return entry
    cases, worst = [], 0.0
    for t in t_values:
        feeds = {"x": base["x"][:1], "t": np.full(1, t, dtype=np.int64), "context": base["context"][:1]}
        ref = _torch(models["unet"], feeds["x"], feeds["t"], feeds["context"])
        case_max, case_mean, _ = _compare(session.run(None, feeds)[0], ref)
        cases.append({"t": t, "batch": 1, "max_abs": case_max, "mean_abs": case_mean})
        worst = max(worst, case_max)
    ts = np.unique(np.linspace(1, src.T, FP16_FINITE_TIMESTEPS).round().astype(np.int64))
    bad = []
    for t in ts:
        out = session.run(None, {"x": base["x"][:1], "t": np.array([t]), "context": base["context"][:1]})[0]
        if not np.all(np.isfinite(out)):
            bad.append(int(t))
    entry.update(max_abs=worst, mean_abs=float(np.mean([c["mean_abs"] for c in cases])), cases=cases,
                 fp16_finite={"timesteps_checked": len(ts), "finite": not bad, "non_finite_timesteps": bad})
    if bad:
        failures.append(f"{path.name} on {runtime.provider} gives NaN/Inf at t={bad[:5]}")
    return entry


def validate_latent(folder: Path, src: LatentSource, models: dict[str, Any], fp16_file: str | None = None
                    ) -> dict[str, Any]:
    """Every component's ONNX graph (every provider that runs here) against PyTorch; `passed` gates on the bounds.

    The U-Net's entries have the training export's layout (`network`, per t and batch); the text
    encoder and the VAE are in `components`, each with its own bound.
    """
    t_values = sorted({1, max(1, round(src.T / 2)), src.T})
    report, usable, failures = start_report(
        folder / bw.UNET_FILE, PARITY_BOUND,
        {"seed": INPUT_SEED, "timesteps": t_values, "batch_sizes": list(UNET_BATCHES), "prompts": list(PARITY_PROMPTS)},
        reference="diffusers UNet2DConditionModel / AutoencoderKL and transformers CLIPTextModel in PyTorch (float32)",
        components=[])
    base = _feeds(src, max(*UNET_BATCHES, *TEXT_BATCHES, *VAE_BATCHES))
    other = _second_feeds(src)
    components = [(TEXT_ENCODER_FILE, "text_encoder", "input_ids", TEXT_BATCHES, PARITY_BOUND, False),
                  (VAE_DECODER_FILE, "vae_decoder", "latent", VAE_BATCHES, VAE_BOUND, False),
                  (VAE_ENCODER_FILE, "vae_encoder", "image", VAE_BATCHES, VAE_BOUND, True)]
    for runtime in usable:
        session = runtime.open(folder / bw.UNET_FILE)
        cases, worst, total, count = [], 0.0, 0.0, 0
        for t in t_values:
            for n in UNET_BATCHES:
                feeds = {"x": base["x"][:n], "t": np.full(n, t, dtype=np.int64), "context": base["context"][:n]}
                ref = _torch(models["unet"], feeds["x"], feeds["t"], feeds["context"])
                case_max, case_mean, _ = _compare(session.run(None, feeds)[0], ref)
                cases.append({"t": t, "batch": n, "max_abs": case_max, "mean_abs": case_mean})
                worst, total, count = max(worst, case_max), total + case_mean * ref.size, count + ref.size
        t_mid = t_values[len(t_values) // 2]  # the graph's dynamic H, W: the same bound at a second, non-square size
        feeds = {"x": other["x"], "t": np.full(1, t_mid, dtype=np.int64), "context": base["context"][:1]}
        ref = _torch(models["unet"], feeds["x"], feeds["t"], feeds["context"])
        case_max, case_mean, _ = _compare(session.run(None, feeds)[0], ref)
        sized: dict[str, Any] = {"t": t_mid, "batch": 1, "latent_hw": list(other["x"].shape[2:]),
                                 "max_abs": case_max, "mean_abs": case_mean}
        cases.append(sized)
        worst = max(worst, case_max)
        entry = {"provider": runtime.provider, "file": bw.UNET_FILE, "gated": True, "max_abs": worst,
                 "mean_abs": total / count, "cases": cases, "passed": worst <= PARITY_BOUND}
        if not entry["passed"]:
            failures.append(f"{bw.UNET_FILE} on {runtime.provider}: max |Δ| {worst:.3g} > {PARITY_BOUND:g}")
        report["network"].append(entry)
        if fp16_file:
            report["network"].append(_fp16_entry(runtime, folder / fp16_file, src, models, base, t_values, failures))
        for file, key, input_name, batches, bound, relative in components:
            session = runtime.open(folder / file)
            comp_cases, c_worst, c_bound = [], 0.0, bound
            for n in batches:
                ref = _torch(models[key], base[input_name][:n])
                case_max, case_mean, ref_max = _compare(session.run(None, {input_name: base[input_name][:n]})[0], ref)
                if relative:
                    c_bound = max(c_bound, bound * max(1.0, ref_max))
                comp_cases.append({"batch": n, "max_abs": case_max, "mean_abs": case_mean, "max_abs_ref": ref_max})
                c_worst = max(c_worst, case_max)
            if key != "text_encoder":  # the VAE's dynamic H, W at the second size
                ref = _torch(models[key], other[input_name])
                case_max, case_mean, ref_max = _compare(session.run(None, {input_name: other[input_name]})[0], ref)
                if relative:
                    c_bound = max(c_bound, bound * max(1.0, ref_max))
                sized = {"batch": 1, "shape": list(other[input_name].shape[2:]), "max_abs": case_max,
                         "mean_abs": case_mean, "max_abs_ref": ref_max}
                comp_cases.append(sized)
                c_worst = max(c_worst, case_max)
            comp = {"component": key, "file": file, "provider": runtime.provider, "bound_max_abs": c_bound,
                    "bound_kind": "relative: bound × max(1, max |ref|)" if relative else "absolute",
                    "max_abs": c_worst, "mean_abs": float(np.mean([c["mean_abs"] for c in comp_cases])),
                    "cases": comp_cases, "passed": c_worst <= c_bound}
            if not comp["passed"]:
                failures.append(f"{file} on {runtime.provider}: max |Δ| {c_worst:.3g} > {c_bound:.3g}")
            report["components"].append(comp)
    report["passed"] = not failures
    report["failures"] = failures
    return report


# --- the preview map -------------------------------------------------------------------------


def fit_preview_map(src: LatentSource) -> tuple[list[list[float]], list[float], dict[str, Any]]:
    """The 3 × C least-squares map (core.latent_preview) on PREVIEW_SAMPLES decoded random latents.

    The samples are PREVIEW_FIT_SIDE² latents at most (the VAE is convolutional and the map acts
    per pixel, so a 512² model is fitted on 128² decodes). The latents are what the decoder sees:
    z / scaling_factor with z ~ N(0, I) (SD's latents have about unit variance after scaling), and
    the posterior means of as many smooth random images (closer to the latents of real pictures).
    Returns the map and its fit (R², per channel, on the samples).
    """
    import torch
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(PREVIEW_SEED)
    h = min(src.latent_size, PREVIEW_FIT_SIDE)
    latents = [torch.randn(PREVIEW_SAMPLES, src.channels, h, h, generator=gen) / src.scaling_factor]
    with torch.no_grad():
        coarse = torch.rand(PREVIEW_SAMPLES, 3, 4, 4, generator=gen) * 2 - 1
        smooth = F.interpolate(coarse, size=(h * src.factor, h * src.factor), mode="bilinear", align_corners=False)
        latents.append(src.vae.encode(smooth, return_dict=False)[0].mean)
        z = torch.cat(latents)
        images = torch.cat([src.vae.decode(chunk, return_dict=False)[0] for chunk in z.split(8)])
    z_np, img_np = z.numpy().astype(np.float64), images.numpy().astype(np.float64)
    matrix, bias = fit_preview(z_np, img_np, src.factor)
    from diffusion_studio.core.latent_preview import area_downsample

    target = area_downsample(img_np, src.factor)
    pred = np.einsum("rc,nchw->nrhw", matrix, z_np) + bias[None, :, None, None]
    r2 = [float(1 - ((pred[:, c] - target[:, c]) ** 2).sum() / max(((target[:, c] - target[:, c].mean()) ** 2).sum(),
                                                                 1e-30)) for c in range(3)]
    fit = {"samples": int(z.shape[0]), "seed": PREVIEW_SEED, "r2_rgb": r2}
    return matrix.tolist(), bias.tolist(), fit


# --- the bundle ------------------------------------------------------------------------------


def _flops(model: Any, src: LatentSource) -> int:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    feeds = _feeds(src, 1)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.from_numpy(feeds["x"]), torch.ones(1, dtype=torch.int64), torch.from_numpy(feeds["context"]))
    return int(counter.get_total_flops())


def _self_check(folder: Path, names: list[str], spec: dict[str, Any]) -> None:
    """model.json passes the app's schema, every graph opens with the contract's I/O names, the app loads it."""
    import onnxruntime as ort

    parse_model_json(spec)
    want = {TEXT_ENCODER_FILE: (["input_ids"], ["last_hidden_state"]),
            bw.UNET_FILE: (["x", "t", "context"], ["model_output"]),
            VAE_DECODER_FILE: (["latent"], ["image"]), VAE_ENCODER_FILE: (["image"], ["latent_mean"])}
    for name in names:
        if name not in want:
            continue
        session = ort.InferenceSession(str(folder / name), providers=["CPUExecutionProvider"])
        got = ([i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()])
        if got != want[name]:
            raise RuntimeError(f"{name} has inputs/outputs {got}, expected {want[name]}")
    from diffusion_studio.inference.latent import load_latent_bundle

    try:  # the app's own loader (graphs against model.json, hashes) must accept it before it is swapped in
        load_latent_bundle(folder, device="cpu")
    except (UsageError, BundleError) as exc:
        raise RuntimeError(f"the app's latent bundle loader rejects the exported bundle: {exc}") from exc


def import_latent_bundle(opts: Any, log: Callable[[str], None] = lambda _msg: None) -> Any:
    """Import the StableDiffusionPipeline folder `opts.source` (an ImportOptions) into `opts.out`."""
    from exporter.diffusers_import import ImportResult
    from exporter.export import _versions

    opts.check()
    out = Path(opts.out).absolute()
    notes: list[str] = bw.tidy_leftovers(out)
    bw.check_target(out, opts.force)
    log(f"loading {opts.source}")
    src = load_latent_source(Path(opts.source))
    notes += src.notes
    notes.append(NO_CONTEXT_MASK_NOTE)
    models = {"unet": wrap_unet(src.unet), "text_encoder": wrap_text_encoder(src.text_encoder),
              "vae_decoder": wrap_vae_decoder(src.vae), "vae_encoder": wrap_vae_encoder(src.vae)}
    parameters = int(sum(p.numel() for p in src.unet.parameters()))
    spec = GraphSpec(channels=src.channels, image_size=src.latent_size, max_tokens=src.max_tokens,
                     context_dim=src.text_dim, kind="latent", dynamic_hw=True)
    weight_bytes = 4 * sum(t.numel() for t in [*src.unet.parameters(), *src.unet.buffers()])
    external = weight_bytes >= EXTERNAL_DATA_BYTES
    log(f"exporting the UNet2DConditionModel ({parameters:,} parameters, opset {opts.opset}"
        f"{', weights in ' + UNET_DATA_FILE if external else ''})")
    if external:
        from exporter.unet_export import ExportInfo

        unet_proto, info = export_large_unet(models["unet"], spec, opts.opset), ExportInfo(TORCHSCRIPT, opts.opset,
                                                                                              None)
    else:
        unet_proto, info = export_unet(models["unet"], spec, opts.opset, first=TORCHSCRIPT)
    if info.fallback_reason:
        notes.append(f"the TorchScript exporter failed ({info.fallback_reason}); used the dynamo exporter")
    feeds = _feeds(src, 2)
    import torch

    log("exporting the CLIP text encoder and the VAE decoder and encoder")
    protos = {
        TEXT_ENCODER_FILE: _export(models["text_encoder"], torch.from_numpy(feeds["input_ids"]), "input_ids",
                                   "last_hidden_state", opts.opset),
        VAE_DECODER_FILE: _export(models["vae_decoder"], torch.from_numpy(feeds["latent"]), "latent", "image",
                                  opts.opset, spatial=True),
        VAE_ENCODER_FILE: _export(models["vae_encoder"], torch.from_numpy(feeds["image"]), "image", "latent_mean",
                                  opts.opset, spatial=True),
    }
    half = None
    if opts.fp16:
        from exporter.unet_export import fp16_variant

        half = fp16_variant(unet_proto)
    log("fitting the live-preview map (latents -> RGB)")
    matrix, bias, fit = fit_preview_map(src)

    import diffusers
    import transformers

    provenance = {
        "run": None, "step": None, "weights": "diffusers", "metrics": {}, "exporter": info.exporter,
        "exporter_fallback_reason": info.fallback_reason, "source": Path(opts.source).absolute().name,
        "pipeline": LATENT_PIPELINES[0], "scheduler": src.scheduler,
        "source_diffusers_version": src.source_diffusers_version,
        "exported_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": {**_versions(), "diffusers": diffusers.__version__, "transformers": transformers.__version__},
        "validated": bool(opts.validate), "preview_fit": fit,
    }
    model_spec = bw.model_json(
        name=opts.name or out.name, image_size=src.image_size, channels=3, T=src.T,
        schedule=src.diffusion["schedule"],
        sampler_defaults={"sampler": "dpmpp-2m", "steps": min(src.T, 20), "guidance": 7.5},
        unet={"file": bw.UNET_FILE, "fp16_file": bw.UNET_FP16_FILE if half is not None else None,
              "opset": info.opset, "parameters": parameters, "flops_per_forward": _flops(models["unet"], src)},
        conditioning={"kind": "text", "text_encoder": TEXT_ENCODER_FILE, "tokenizer": TOKENIZER_FILE,
                      "text_encoder_kind": "clip", "max_tokens": src.max_tokens, "embedding_dim": src.text_dim,
                      "text_encoder_sha256": None, "tokenizer_sha256": None, "pad_token_id": src.pad_token_id},
        provenance=provenance, diffusion=src.diffusion,
    )
    model_spec["latent"] = {"channels": src.channels, "factor": src.factor, "scaling_factor": src.scaling_factor,
                            "vae_decoder": VAE_DECODER_FILE, "vae_encoder": VAE_ENCODER_FILE,
                            "size_multiple": src.factor * unet_multiple(src),  # pixels (SD: 64)
                            "preview": {"matrix": matrix, "bias": bias}}
    parse_model_json(model_spec)
    props = bw.metadata_props(model_spec)
    stamp_metadata([unet_proto, *protos.values()], half, props)

    from diffusion_studio.inference.clip_tokenizer import save as save_tokenizer

    report: dict[str, Any] | None = None
    with bw.staged_bundle(out, opts.force) as tmp:
        names = save_unet(unet_proto, tmp, external)
        for name, proto in protos.items():
            save_model(proto, tmp / name)
        save_tokenizer(src.tokenizer, tmp / TOKENIZER_FILE)
        names += [*protos, TOKENIZER_FILE, *save_fp16(tmp, half)]
        if opts.validate:
            log("checking parity between PyTorch and ONNX Runtime (text encoder, U-Net, VAE decoder and encoder)")
            report = validate_latent(tmp, src, models, bw.UNET_FP16_FILE if half is not None else None)
            record_report(report, tmp, names)
        bw.seal(tmp, names, model_spec)
        _self_check(tmp, names, model_spec)
    return ImportResult(bundle=out, spec=model_spec, report=report, info=info, notes=notes)
