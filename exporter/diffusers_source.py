"""What `python -m exporter diffusers SRC` imports: a diffusers UNet2DModel and its scheduler's facts.

SRC is a saved DDPMPipeline / DDIMPipeline / PNDMPipeline folder (model_index.json, unet/,
scheduler/) or a bare UNet2DModel folder (config.json and weights; DDPM's scheduler defaults
then, with a note). Every config is read as JSON (`core.files.read_json_file`); weights come
from safetensors, or from a .bin through `torch.load(weights_only=True)`, which refuses any
pickle that would run code, so a pickle is never fully unpickled.

Everything the app cannot run the same way diffusers would is refused before anything is
written, with one sentence naming the config field (a `UsageError`, exit code 2).

Timesteps: diffusers counts k = 0 … T−1 with ᾱ at k = ∏_{i≤k}(1 − β_i), which is the paper's
ᾱ_t at t = k + 1; the exported graph takes the paper's t and feeds t − 1 to the UNet.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diffusion_studio.core.bundle import MAX_CLASSES, MAX_IMAGE_SIZE_V2, MAX_T, MIN_IMAGE_SIZE_V2
from diffusion_studio.core.files import read_json_file
from diffusion_studio.core.schedule import ScheduleKind
from diffusion_studio.errors import UsageError
from exporter.source import _shape_mismatch

if TYPE_CHECKING:
    import torch

MODEL_INDEX = "model_index.json"
CONFIG = "config.json"
SCHEDULER_CONFIG = "scheduler_config.json"
WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
PIPELINES = ("DDPMPipeline", "DDIMPipeline", "PNDMPipeline")
SCHEDULERS = ("DDPMScheduler", "DDIMScheduler", "PNDMScheduler")
# diffusers' beta_schedule -> our schedule kind (sigmoid and explicit trained_betas are refused).
BETA_SCHEDULES = {"linear": ScheduleKind.LINEAR, "scaled_linear": ScheduleKind.SCALED_LINEAR,
                  "squaredcos_cap_v2": ScheduleKind.COSINE}
# diffusers' variance_type -> ours. The *_log types are the same σ_t² computed through its log.
VARIANCE_TYPES = {"fixed_small": "fixed_small", "fixed_small_log": "fixed_small", "fixed_large": "fixed_large",
                  "fixed_large_log": "fixed_large", "learned_range": "learned_range"}
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
TIME_EMBEDDINGS = ("positional", "learned")  # fourier is score-SDE (continuous σ), not DDPM


@dataclass
class DiffusersSource:
    """A loaded UNet2DModel (eval, float32, CPU) and what model.json needs about it."""

    path: Path
    unet: Any  # diffusers.UNet2DModel
    unet_config: dict[str, Any]
    weights_file: str  # relative to `path`
    channels: int
    image_size: int
    out_channels: int
    num_classes: int | None  # set for a class-conditional UNet (num_class_embeds)
    diffusion: dict[str, Any]  # model.json `diffusion` (format 2)
    pipeline: str | None  # the pipeline class, None for a bare UNet folder
    scheduler: str | None  # the scheduler class, None when DDPM defaults were assumed
    source_diffusers_version: str | None
    notes: list[str] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return "class" if self.num_classes is not None else "none"

    @property
    def T(self) -> int:
        return int(self.diffusion["T"])


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _refuse(where: str, key: str, problem: str) -> UsageError:
    return UsageError(f"{where}: {key} {problem}.")


def _int(cfg: dict[str, Any], key: str, default: Any, where: str, lo: int, hi: int) -> int:
    value = cfg.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise _refuse(where, key, f"must be an integer from {lo} to {hi}, got {_show(value)}")
    return value


def _number(cfg: dict[str, Any], key: str, default: float, where: str) -> float:
    value = cfg.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _refuse(where, key, f"must be a finite number, got {_show(value)}")
    return float(value)


def _read_config(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise UsageError(f"{path} is missing, so this is not a diffusers {what} folder.")
    data = read_json_file(path, f"The {what} config", error=UsageError)
    if not isinstance(data, dict):
        raise UsageError(f"{path} must hold a JSON object, got {type(data).__name__}.")
    return data


# --- scheduler -------------------------------------------------------------------------------


def map_scheduler(cfg: dict[str, Any], where: str, notes: list[str]) -> dict[str, Any]:
    """model.json `diffusion` (format 2) from a DDPM-family scheduler config; UsageError names what is unsupported."""
    cls = cfg.get("_class_name", "DDPMScheduler")
    if cls not in SCHEDULERS:
        raise _refuse(where, "_class_name", f"is {_show(cls)}; only {', '.join(SCHEDULERS)} configs can be imported")
    if cfg.get("trained_betas") is not None:
        raise _refuse(where, "trained_betas", "(an explicit list of β) is not supported; use a named beta_schedule")
    if cfg.get("thresholding", False) is not False:
        raise _refuse(where, "thresholding", "(dynamic thresholding of x̂_0) is not supported; it must be false")
    if cfg.get("rescale_betas_zero_snr", False) is not False:
        raise _refuse(where, "rescale_betas_zero_snr", "is not supported; it must be false")
    T = _int(cfg, "num_train_timesteps", 1000, where, 1, MAX_T)
    schedule_name = cfg.get("beta_schedule", "linear")
    kind = BETA_SCHEDULES.get(schedule_name) if isinstance(schedule_name, str) else None
    if kind is None:
        raise _refuse(where, "beta_schedule", f"is {_show(schedule_name)}; supported are "
                      f"{', '.join(BETA_SCHEDULES)}")
    beta_start: float | None = None
    beta_end: float | None = None
    if kind is not ScheduleKind.COSINE:  # squaredcos_cap_v2 ignores the β ends
        beta_start = _number(cfg, "beta_start", 0.0001, where)
        beta_end = _number(cfg, "beta_end", 0.02, where)
        if not 0.0 < beta_start <= beta_end < 1.0:
            raise _refuse(where, "beta_start", f"and beta_end must satisfy 0 < beta_start <= beta_end < 1, "
                          f"got {beta_start:g} and {beta_end:g}")
    if "variance_type" in cfg or cls == "DDPMScheduler":
        variance_type = cfg.get("variance_type", "fixed_small")
        if variance_type == "learned":
            raise _refuse(where, "variance_type", "is 'learned' (the network predicts Σ itself), which is not "
                          "supported; 'learned_range' is")
        if variance_type not in VARIANCE_TYPES:
            raise _refuse(where, "variance_type", f"is {_show(variance_type)}; supported are "
                          f"{', '.join(VARIANCE_TYPES)}")
        variance = VARIANCE_TYPES[variance_type]
    else:
        variance = "fixed_small"
        notes.append(f"{cls} has no variance_type; assumed fixed_small (σ_t² = β̃_t, DDPMScheduler's default)")
    prediction = cfg.get("prediction_type", "epsilon")
    if prediction not in PREDICTION_TYPES:
        raise _refuse(where, "prediction_type", f"is {_show(prediction)}; supported are {', '.join(PREDICTION_TYPES)}")
    clip_sample = cfg.get("clip_sample", True)
    if not isinstance(clip_sample, bool):
        raise _refuse(where, "clip_sample", f"must be true or false, got {_show(clip_sample)}")
    clip_range = _number(cfg, "clip_sample_range", 1.0, where)
    if clip_range <= 0:
        raise _refuse(where, "clip_sample_range", f"must be positive, got {clip_range:g}")
    spacing = cfg.get("timestep_spacing", "leading")
    if spacing != "leading" or cfg.get("steps_offset", 0):
        # Which sub-sequence of timesteps a sampler visits is the sampler's choice, not the model's.
        notes.append(f"timestep_spacing {spacing!r} (steps_offset {cfg.get('steps_offset', 0)}) is a diffusers "
                     "sampling choice; Diffusion Studio's samplers space their own timesteps")
    return {"T": T, "schedule": kind.value, "beta_start": beta_start, "beta_end": beta_end,
            "prediction": prediction, "variance": variance, "clip_sample": clip_sample,
            "clip_sample_range": clip_range}


# --- unet ------------------------------------------------------------------------------------


def _check_unet_config(cfg: dict[str, Any], where: str, variance: str, T: int) -> tuple[int, int, int, int | None]:
    """(channels, image size, output channels, classes or None) of a supported UNet2DModel config."""
    cls = cfg.get("_class_name", "UNet2DModel")
    if cls == "UNet2DConditionModel":
        raise _refuse(where, "_class_name", "is UNet2DConditionModel (a text-conditioned latent U-Net), which "
                      "cannot be imported; only UNet2DModel can")
    if cls != "UNet2DModel":
        raise _refuse(where, "_class_name", f"is {_show(cls)}; only UNet2DModel can be imported")
    size = cfg.get("sample_size")
    if isinstance(size, list) and len(size) == 2 and size[0] == size[1]:
        size = size[0]
    elif isinstance(size, list):
        raise _refuse(where, "sample_size", f"is {_show(size)}; only square images are supported")
    size = _int({"sample_size": size}, "sample_size", None, where, MIN_IMAGE_SIZE_V2, MAX_IMAGE_SIZE_V2)
    channels = _int(cfg, "in_channels", 3, where, 1, 4)
    if channels == 2:
        raise _refuse(where, "in_channels", "must be 1, 3 or 4, got 2")
    out = _int(cfg, "out_channels", 3, where, 1, 8)
    want = 2 * channels if variance == "learned_range" else channels
    if out != want:
        because = "variance_type learned_range needs 2 × in_channels" if variance == "learned_range" else \
            f"the scheduler's variance_type {variance} needs in_channels"
        raise _refuse(where, "out_channels", f"is {out}, but {because} ({want})")
    time_embedding = cfg.get("time_embedding_type", "positional")
    if time_embedding not in TIME_EMBEDDINGS:
        raise _refuse(where, "time_embedding_type", f"is {_show(time_embedding)}; only positional and learned "
                      "(discrete DDPM timesteps) are supported")
    if time_embedding == "learned":
        _int(cfg, "num_train_timesteps", None, where, T, MAX_T)
    if cfg.get("class_embed_type") is not None:
        raise _refuse(where, "class_embed_type", f"is {_show(cfg['class_embed_type'])}; only the default "
                      "(null, an embedding table of num_class_embeds) is supported")
    classes = None
    if cfg.get("num_class_embeds") is not None:
        classes = _int(cfg, "num_class_embeds", None, where, 1, MAX_CLASSES)
    return channels, size, out, classes


def _weights_file(folder: Path) -> Path:
    for name in WEIGHT_NAMES:
        if (folder / name).is_file():
            return folder / name
    if any(folder.glob("diffusion_pytorch_model*.index.json")):
        raise UsageError(f"The weights in {folder} are sharded, which this importer does not read; "
                         "save the UNet with a larger max_shard_size.")
    raise UsageError(f"{folder} has no {' or '.join(WEIGHT_NAMES)}.")


def load_state(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file, or of a .bin through torch.load(weights_only=True) (no code runs)."""
    import pickle

    import torch

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = (str(exc).strip().splitlines() or ["?"])[0][:160]
        raise UsageError(f"{path} is not a plain tensor file: torch.load(weights_only=True) refused it "
                         f"({first}).") from exc
    except Exception as exc:  # noqa: BLE001 - safetensors and torch raise many kinds for a bad file
        raise UsageError(f"{path} cannot be read as weights ({type(exc).__name__}: "
                         f"{(str(exc).strip().splitlines() or ['?'])[0][:160]}).") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UsageError(f"{path} does not hold a dictionary of tensors.")
    return state


def _build_unet(cfg: dict[str, Any], folder: Path, where: str) -> tuple[Any, str]:
    import torch
    from diffusers import UNet2DModel

    weights = _weights_file(folder)
    state = load_state(weights)
    try:
        unet = UNet2DModel.from_config({k: v for k, v in cfg.items()})
    except Exception as exc:  # noqa: BLE001 - a config diffusers cannot build is bad input here
        raise UsageError(f"{where} does not describe a UNet2DModel diffusers can build "
                         f"({type(exc).__name__}: {(str(exc).strip().splitlines() or ['?'])[0][:160]}).") from exc
    mismatch = _shape_mismatch(unet.state_dict(), state)
    if mismatch:
        raise UsageError(f"The weights in {weights} do not match {where}: {mismatch}.")
    bad = next((k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if bad is not None:
        raise UsageError(f"The weights in {weights} contain NaN or Inf (first in {bad!r}).")
    unet.load_state_dict({k: v.to(torch.float32) for k, v in state.items()}, strict=True)
    unet = unet.eval()
    for p in unet.parameters():
        p.requires_grad_(False)
    return unet, weights.name


def load_diffusers_source(path: Path) -> DiffusersSource:
    """Read, check and load SRC (module docstring); UsageError with one sentence for anything unsupported."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{path} does not exist.")
    if not path.is_dir():
        raise UsageError(f"{path} is not a folder; pass a saved diffusers pipeline or UNet2DModel folder.")
    notes: list[str] = []
    pipeline = scheduler = None
    if (path / MODEL_INDEX).is_file():
        index = _read_config(path / MODEL_INDEX, "pipeline")
        pipeline = index.get("_class_name")
        if pipeline not in PIPELINES:
            raise _refuse(f"{path / MODEL_INDEX}", "_class_name", f"is {_show(pipeline)}; supported pipelines "
                          f"are {', '.join(PIPELINES)} (a UNet2DModel with a DDPM-family scheduler)")
        unet_dir = path / "unet"
        scheduler_path = path / "scheduler" / SCHEDULER_CONFIG
        scheduler_cfg = _read_config(scheduler_path, "scheduler")
        scheduler = str(scheduler_cfg.get("_class_name", "DDPMScheduler"))
        diffusion = map_scheduler(scheduler_cfg, str(scheduler_path), notes)
    elif (path / CONFIG).is_file():
        unet_dir = path
        diffusion = map_scheduler({}, "DDPMScheduler defaults", notes)
        notes.append("a bare UNet2DModel folder has no scheduler config; assumed DDPMScheduler's defaults "
                     "(linear β from 1e-4 to 0.02 over T = 1000, ε-prediction, fixed_small variance, clip_sample)")
    else:
        raise UsageError(f"{path} is neither a diffusers pipeline folder ({MODEL_INDEX}) nor a UNet2DModel "
                         f"folder ({CONFIG}).")
    where = str(unet_dir / CONFIG)
    cfg = _read_config(unet_dir / CONFIG, "UNet")
    channels, size, out, classes = _check_unet_config(cfg, where, diffusion["variance"], diffusion["T"])
    unet, weights_name = _build_unet(cfg, unet_dir, where)
    weights_file = (unet_dir / weights_name).relative_to(path).as_posix()
    version = cfg.get("_diffusers_version")
    return DiffusersSource(path=path, unet=unet, unet_config=cfg, weights_file=weights_file, channels=channels,
                           image_size=size, out_channels=out, num_classes=classes, diffusion=diffusion,
                           pipeline=pipeline, scheduler=scheduler,
                           source_diffusers_version=version if isinstance(version, str) else None, notes=notes)
