"""What the exporter exports: a training run or checkpoint file, turned into a UNet.

Everything wrong with the input (a missing path, a folder that is not a run, a truncated
or corrupt safetensors file, weights that do not fit the config, NaN weights) is a
`UsageError` with one sentence, raised before anything is written.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffusion_studio.errors import UsageError

WEIGHTS = ("ema", "raw")
DEFAULT_MAX_TOKENS = 32


@dataclass(frozen=True)
class ExportSource:
    """A loaded checkpoint with the UNet built from it (eval mode, float32, CPU)."""

    path: Path  # what the user named (run folder or .safetensors)
    checkpoint: Any  # training.checkpoints.Checkpoint
    model: Any  # training.unet.UNet
    weights: str  # "ema" | "raw"

    @property
    def config(self) -> dict[str, Any]:
        return dict(self.checkpoint.config or {})

    @property
    def unet_config(self) -> Any:
        return self.checkpoint.unet_config

    @property
    def T(self) -> int:
        return int(config_value(self.config, "T", "timesteps", default=1000))

    @property
    def schedule(self) -> str:
        value = config_value(self.config, "schedule", default="linear")
        return str(getattr(value, "value", value))

    @property
    def max_tokens(self) -> int:
        return int(config_value(self.config, "max_tokens", default=DEFAULT_MAX_TOKENS))


def config_value(config: dict[str, Any], *names: str, default: Any = None) -> Any:
    """The first of `names` found in the run config or its nested "diffusion"/"text" sections."""
    for section in (config, config.get("diffusion") or {}, config.get("text") or {},
                    config.get("text_encoder") if isinstance(config.get("text_encoder"), dict) else {}):
        if isinstance(section, dict):
            for name in names:
                if section.get(name) is not None:
                    return section[name]
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


def _read_checkpoint(path: Path) -> Any:
    from diffusion_studio.training.checkpoints import load_checkpoint

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
    source = ExportSource(path=path, checkpoint=checkpoint, model=model, weights=weights)
    if not math.isfinite(source.T) or source.T < 1:
        raise UsageError(f"The run config in {path} has an invalid T={source.T}.")
    return source
