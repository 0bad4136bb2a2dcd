"""What the exporter exports: a training run or checkpoint file, turned into a UNet.

Everything wrong with the input (a missing path, a folder that is not a run, a truncated
or corrupt safetensors file, weights that do not fit the config, NaN weights) is a
`UsageError` with one sentence, raised before anything is written.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diffusion_studio.core.bundle import MAX_T
from diffusion_studio.core.files import read_json_file
from diffusion_studio.errors import UsageError

if TYPE_CHECKING:
    from diffusion_studio.training.checkpoints import Checkpoint
    from diffusion_studio.training.unet import UNet, UNetConfig

WEIGHTS = ("ema", "raw")
DEFAULT_MAX_TOKENS = 32


@dataclass(frozen=True)
class ExportSource:
    """A loaded checkpoint, the UNet built from it (eval mode, float32, CPU) and its diffusion facts."""

    path: Path  # what the user named (run folder or .safetensors)
    checkpoint: Checkpoint
    model: UNet
    weights: str  # "ema" | "raw"
    T: int
    schedule: str  # "linear" | "cosine"
    max_tokens: int

    @property
    def config(self) -> dict[str, Any]:
        return dict(self.checkpoint.config or {})

    @property
    def unet_config(self) -> UNetConfig:
        return self.checkpoint.unet_config


def config_value(config: dict[str, Any], *names: str, default: Any = None) -> Any:
    """The first of `names` set in the run config (training.config.TrainConfig as JSON)."""
    for name in names:
        if config.get(name) is not None:
            return config[name]
    return default


def _shape_mismatch(expected: dict, given: dict) -> str | None:
    """One sentence describing how `given` tensors differ from the model's, or None."""
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    wrong = sorted(k for k in set(expected) & set(given) if tuple(expected[k].shape) != tuple(given[k].shape))
    if not (missing or unexpected or wrong):
        return None
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {missing[0]!r})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]!r})")
    if wrong:
        k = wrong[0]
        parts.append(f"{len(wrong)} with another shape (e.g. {k!r} is {list(given[k].shape)}, "
                     f"the config needs {list(expected[k].shape)})")
    return ", ".join(parts)


def _show(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return f"a JSON {'object' if isinstance(value, dict) else 'list'}"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _kind_of(default: Any) -> str:
    """The JSON type a UNetConfig field takes, from its default value."""
    if isinstance(default, bool):
        return "bool"
    if isinstance(default, int):
        return "int"
    if isinstance(default, float):
        return "number"
    if isinstance(default, (tuple, list)):
        return "ints"
    return "any"


_EXPECTED = {"bool": "true or false", "int": "an integer", "number": "a finite number",
             "ints": "a list of integers", "str": "a string", "str|null": "a string or null",
             "object": "a JSON object"}


def _type_ok(kind: str, value: Any) -> bool:
    return {
        "bool": lambda v: isinstance(v, bool),
        "int": _is_int,
        "number": _is_number,
        "ints": lambda v: isinstance(v, list) and all(_is_int(x) for x in v),
        "str": lambda v: isinstance(v, str),
        "str|null": lambda v: v is None or isinstance(v, str),
        "object": lambda v: isinstance(v, dict),
        "any": lambda v: True,
    }[kind](value)


def check_run_config(config: Any, where: Path) -> None:
    """Type-check the run config fields the exporter reads (the U-Net's included).

    `config` is the `config` object of a checkpoint sidecar (training.config.TrainConfig as JSON).
    A wrong type is a UsageError naming the field, e.g. `config.unet.base_channels must be an
    integer, got '16'`; ranges and consistency are checked later, by UNetConfig and
    `_diffusion_facts`. Unknown or missing fields are left to the checkpoint loader.
    """
    from diffusion_studio.training.unet import UNetConfig

    def fail(field: str, kind: str, value: Any) -> UsageError:
        return UsageError(f"The checkpoint sidecar {where} is invalid: {field} must be {_EXPECTED[kind]}, "
                          f"got {_show(value)}.")

    if not isinstance(config, dict):
        raise fail("config", "object", config)
    unet = config.get("unet")
    if not isinstance(unet, dict):
        raise fail("config.unet", "object", unet)
    for f in dataclasses.fields(UNetConfig):
        if f.name in unet:
            default = f.default if f.default is not dataclasses.MISSING else None
            kind = _kind_of(default)
            if not _type_ok(kind, unet[f.name]):
                raise fail(f"config.unet.{f.name}", kind, unet[f.name])
    top = {"T": "int", "max_tokens": "int", "schedule": "str", "sampler": "str", "guidance": "number",
           "sample_guidance": "number", "text_encoder_sha256": "str|null", "tokenizer_sha256": "str|null"}
    for name, kind in top.items():
        if config.get(name) is not None and not _type_ok(kind, config[name]):
            raise fail(f"config.{name}", kind, config[name])
    recorded = config.get("text_encoder")
    if isinstance(recorded, dict):
        for name in ("sha256", "tokenizer_sha256"):
            if not _type_ok("str|null", recorded.get(name)):
                raise fail(f"config.text_encoder.{name}", "str|null", recorded[name])


def _sidecar_of(path: Path) -> Path | None:
    """The JSON sidecar `load_checkpoint` will read for `path` (a run folder or a checkpoint file)."""
    from diffusion_studio.training.checkpoints import latest_checkpoint

    if path.is_dir():
        latest = latest_checkpoint(path)
        return None if latest is None else latest.with_suffix(".json")
    if path.suffix in (".safetensors", ".json"):
        return path.with_suffix(".json")
    return None


def _check_sidecar(path: Path) -> None:
    """Read the sidecar safely (deep, huge or non-JSON text is one sentence) and type-check its config."""
    sidecar = _sidecar_of(path)
    if sidecar is None or not sidecar.is_file():
        return  # load_checkpoint says what is missing
    data = read_json_file(sidecar, "The checkpoint sidecar")
    if isinstance(data, dict) and "config" in data:
        check_run_config(data["config"], sidecar)


def _read_checkpoint(path: Path) -> Any:
    from diffusion_studio.training.checkpoints import load_checkpoint

    _check_sidecar(path)
    try:
        return load_checkpoint(path)
    except UsageError:
        raise
    except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError) as exc:
        raise UsageError(f"The checkpoint {path} cannot be read ({_first_line(exc)}).") from exc
    except Exception as exc:  # safetensors raises its own SafetensorError for corrupt files
        if "safetensor" in type(exc).__name__.lower():
            raise UsageError(f"The checkpoint {path} is not a valid safetensors file ({_first_line(exc)}).") from exc
        raise


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0].rstrip(".") if text else type(exc).__name__


def load_source(path: Path, weights: str = "ema") -> ExportSource:
    """Load a run folder (its latest checkpoint) or a .safetensors checkpoint into a UNet."""
    import torch

    from diffusion_studio.training.unet import UNet

    path = Path(path)
    if weights not in WEIGHTS:
        raise UsageError(f"Unknown weights {weights!r}; choose ema or raw.")
    if not path.exists():
        raise UsageError(f"{path} does not exist.")
    checkpoint = _read_checkpoint(path)
    state = checkpoint.ema if weights == "ema" else checkpoint.model
    if not state:
        other = "raw" if weights == "ema" else "ema"
        raise UsageError(f"The checkpoint {path} has no {weights} weights; try --weights {other}.")
    try:
        model = UNet(checkpoint.unet_config)
    except UsageError as exc:
        raise UsageError(f"The U-Net config in {path} is invalid: {str(exc).rstrip('.')}.") from exc
    mismatch = _shape_mismatch(model.state_dict(), state)
    if mismatch:
        raise UsageError(f"The {weights} weights in {path} do not match its U-Net config: {mismatch}.")
    bad = next((k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if bad is not None:
        raise UsageError(f"The {weights} weights in {path} contain NaN or Inf (first in {bad!r}); "
                         "the run diverged.")
    model.load_state_dict({k: v.to(torch.float32) for k, v in state.items()}, strict=True)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    T, schedule, max_tokens = _diffusion_facts(path, dict(checkpoint.config or {}))
    return ExportSource(path=path, checkpoint=checkpoint, model=model, weights=weights, T=T,
                        schedule=schedule, max_tokens=max_tokens)


def _diffusion_facts(path: Path, config: dict[str, Any]) -> tuple[int, str, int]:
    """T, schedule and max_tokens from the run config, each checked (UsageError names the field)."""
    from diffusion_studio.core.schedule import parse_schedule_kind

    T = config_value(config, "T", default=1000)
    if not _is_int(T) or not 2 <= T <= MAX_T:
        raise UsageError(f"The run config of {path} has an invalid T={_show(T)} (an integer from 2 to {MAX_T}).")
    max_tokens = config_value(config, "max_tokens", default=DEFAULT_MAX_TOKENS)
    if not _is_int(max_tokens) or not 2 <= max_tokens <= 512:
        raise UsageError(f"The run config of {path} has an invalid max_tokens={_show(max_tokens)} "
                         "(an integer from 2 to 512).")
    schedule = parse_schedule_kind(str(config_value(config, "schedule", default="linear"))).value
    return T, schedule, max_tokens
