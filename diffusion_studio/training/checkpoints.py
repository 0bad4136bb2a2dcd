"""Checkpoints without pickle: tensors in safetensors, everything else in a JSON sidecar.

RUN_DIR/checkpoints/step-00001000.safetensors  model.*, ema.*, optim.<param>.<key>, rng.torch
RUN_DIR/checkpoints/step-00001000.json         step, config, optimizer param groups, RNG states,
                                               LR-scheduler state, metrics
Both files are written atomically (temp file + os.replace), the tensors first, so a JSON
sidecar always names a complete tensor file. Only the last K checkpoints are kept.
"""

from __future__ import annotations

import json
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from diffusion_studio.core.files import atomic_write_bytes, atomic_write_text
from diffusion_studio.errors import UsageError
from diffusion_studio.training.unet import UNetConfig

FORMAT = "diffusion-studio-checkpoint"
FORMAT_VERSION = 1
_NAME_RE = re.compile(r"^step-(\d{8,})\.json$")
# Temp files of the atomic writes (core.files) of a run, "<name>.tmp-<pid>", by folder of the run.
_TEMP_RE = {"checkpoints": re.compile(r"^step-\d{8,}\.(?:safetensors|json)\.tmp-(\d+)$"),
            "samples": re.compile(r"^step-\d{8,}(?:-raw)?\.png\.tmp-(\d+)$"),
            "": re.compile(r"^config\.json\.tmp-(\d+)$")}
_PID_MAX = 2**22  # Linux's highest possible PID; larger numbers name no process


@dataclass
class Checkpoint:
    config: dict
    unet_config: UNetConfig
    step: int
    model: dict[str, torch.Tensor]
    ema: dict[str, torch.Tensor]
    metrics: dict
    run_dir: Path
    path: Path = Path()
    optim: dict[str, torch.Tensor] = field(default_factory=dict)  # "<param>.<key>" -> tensor
    optim_groups: list[dict] = field(default_factory=list)
    scheduler: dict = field(default_factory=dict)
    rng: dict = field(default_factory=dict)  # python / numpy states (JSON), torch state tensor


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


# ---- RNG states as JSON-safe values -------------------------------------------------------

def capture_rng() -> tuple[dict, torch.Tensor]:
    """Python and numpy global RNG states as JSON, torch's CPU RNG state as a uint8 tensor."""
    py_version, py_state, py_gauss = random.getstate()
    np_state = np.random.get_state(legacy=True)
    if not isinstance(np_state, tuple):  # the global RandomState's MT19937 always gives the legacy tuple
        raise TypeError(f"unexpected numpy RNG state {type(np_state).__name__}")
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np_state
    state = {"python": [py_version, list(py_state), py_gauss],
             "numpy": [np_name, np_keys.tolist(), int(np_pos), int(np_has_gauss), float(np_gauss)]}
    return state, torch.random.get_rng_state().clone()


def restore_rng(state: dict, torch_state: torch.Tensor | None) -> None:
    """Set the global RNGs to a checkpoint's states; UsageError if a state is malformed."""
    try:
        if "python" in state:
            version, py_state, gauss = state["python"]
            random.setstate((version, tuple(py_state), gauss))
        if "numpy" in state:
            name, keys, pos, has_gauss, gauss = state["numpy"]
            np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
        if torch_state is not None:
            torch.random.set_rng_state(torch_state.to(torch.uint8))
    except (TypeError, ValueError, OverflowError, RuntimeError):
        raise UsageError("The random-number states in the checkpoint are damaged.") from None


# ---- optimizer state <-> flat tensors + JSON ----------------------------------------------

def optimizer_to_flat(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    sd = optimizer.state_dict()
    tensors = {}
    for index, entries in sd["state"].items():
        for key, value in entries.items():
            tensors[f"{index}.{key}"] = (value if torch.is_tensor(value) else torch.tensor(value)).detach().cpu()
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, groups


def optimizer_from_flat(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                        groups: list[dict]) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    try:
        for name, value in tensors.items():
            index, key = name.split(".", 1)
            state.setdefault(int(index), {})[key] = value
        fixed = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in groups]
        optimizer.load_state_dict({"state": state, "param_groups": fixed})
    except (ValueError, KeyError, RuntimeError, TypeError, AttributeError) as exc:
        raise UsageError(f"The optimizer state in the checkpoint does not fit this model ({exc}).") from None


# ---- save / load --------------------------------------------------------------------------

def save_checkpoint(run_dir: Path, step: int, *, model: torch.nn.Module, ema: torch.nn.Module,
                    optimizer: torch.optim.Optimizer, config: dict, scheduler: dict,
                    metrics: dict, keep_last: int) -> Path:
    """Write step-XXXXXXXX.safetensors + .json atomically; prune to the last `keep_last`."""
    folder = checkpoint_dir(run_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"Cannot create the checkpoint folder {folder} ({exc.strerror or exc}).") from None
    tensors: dict[str, torch.Tensor] = {}
    for prefix, module in (("model", model), ("ema", ema)):
        for name, value in module.state_dict().items():
            tensors[f"{prefix}.{name}"] = value.detach().cpu().contiguous().clone()
    optim_tensors, groups = optimizer_to_flat(optimizer)
    for name, value in optim_tensors.items():
        tensors[f"optim.{name}"] = value.contiguous().clone()
    rng_json, torch_rng = capture_rng()
    tensors["rng.torch"] = torch_rng
    base = folder / checkpoint_name(step)
    atomic_write_bytes(base.with_suffix(".safetensors"), st_save(tensors))
    sidecar = {"format": FORMAT, "format_version": FORMAT_VERSION, "step": int(step),
               "config": config, "optim_groups": groups, "scheduler": scheduler,
               "rng": rng_json, "metrics": metrics}
    try:
        atomic_write_text(base.with_suffix(".json"), json.dumps(sidecar, indent=1, allow_nan=False))
    except UsageError:  # without its sidecar the tensor file is no checkpoint: take it back
        try:
            base.with_suffix(".safetensors").unlink(missing_ok=True)
        except OSError:
            pass
        raise
    prune_checkpoints(run_dir, keep_last)
    return base.with_suffix(".safetensors")


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, safetensors path) of every complete checkpoint, oldest first."""
    folder = checkpoint_dir(run_dir)
    found = []
    if folder.is_dir():
        for p in folder.iterdir():
            m = _NAME_RE.match(p.name)
            if m and p.with_suffix(".safetensors").is_file():
                found.append((int(m.group(1)), p.with_suffix(".safetensors")))
    return sorted(found)


def prune_checkpoints(run_dir: Path, keep_last: int) -> None:
    for _, path in list_checkpoints(run_dir)[:-keep_last]:
        try:
            path.with_suffix(".json").unlink(missing_ok=True)  # sidecar first: never an orphan JSON
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise UsageError(f"Cannot remove the old checkpoint {path} ({exc.strerror or exc}).") from None


def _pid_alive(pid: int) -> bool:
    if not 0 < pid < _PID_MAX:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    except OSError:
        return False
    return True


def stale_temp_files(run_dir: Path) -> list[Path]:
    """Temp files of atomic writes in RUN_DIR whose writer is gone (killed mid-write), sorted.

    Only our own names count (step-*.safetensors/.json/.png and config.json, each + .tmp-PID),
    and only when no live process has that PID; nothing else in the folder is ever touched.
    """
    found = []
    for sub, pattern in _TEMP_RE.items():
        folder = Path(run_dir) / sub
        try:
            entries = list(folder.iterdir()) if folder.is_dir() else []
        except OSError:
            continue
        for entry in entries:
            m = pattern.match(entry.name)
            if m and entry.is_file() and not entry.is_symlink() and not _pid_alive(int(m.group(1))):
                found.append(entry)
    return sorted(found)


def remove_stale_temp_files(run_dir: Path) -> list[Path]:
    """Delete stale_temp_files(RUN_DIR); returns what was removed."""
    removed = []
    for path in stale_temp_files(run_dir):
        try:
            path.unlink()
            removed.append(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise UsageError(f"Cannot remove the left-over temp file {path} ({exc.strerror or exc}).") from None
    return removed


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Load a run folder's latest checkpoint or one `.safetensors` file (never unpickles)."""
    path = Path(path)
    if path.is_dir():
        latest = latest_checkpoint(path)
        if latest is None:
            raise UsageError(f"The run folder {path} holds no checkpoint.")
        path = latest
    elif path.suffix == ".json":
        path = path.with_suffix(".safetensors")
    if not path.is_file():
        raise UsageError(f"The checkpoint {path} does not exist.")
    if path.suffix != ".safetensors":
        raise UsageError(f"{path} is not a checkpoint (expected a run folder or a .safetensors file).")
    sidecar_path = path.with_suffix(".json")
    try:
        sidecar = json.loads(sidecar_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"The checkpoint {path} has no JSON sidecar {sidecar_path.name}.") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise UsageError(f"The checkpoint sidecar {sidecar_path} is damaged.") from None
    if not isinstance(sidecar, dict) or sidecar.get("format") != FORMAT:
        raise UsageError(f"{sidecar_path} is not a Diffusion Studio checkpoint sidecar.")
    try:
        tensors = st_load(path.read_bytes())
    except (SafetensorError, OSError, ValueError, RuntimeError):
        raise UsageError(f"The checkpoint {path} is truncated or damaged.") from None
    config, step = sidecar.get("config"), sidecar.get("step")
    if not isinstance(config, dict) or "unet" not in config or isinstance(step, bool) or not isinstance(step, int):
        raise UsageError(f"The checkpoint sidecar {sidecar_path} lacks its step or U-Net config.")
    if step < 0:
        raise UsageError(f"The checkpoint sidecar {sidecar_path} has a negative step {step}.")
    try:
        unet_config = UNetConfig.from_dict(config["unet"])
    except UsageError as exc:
        raise UsageError(f"The checkpoint sidecar {sidecar_path} has an invalid U-Net config: {exc}") from None
    groups: dict[str, dict[str, torch.Tensor]] = {"model": {}, "ema": {}, "optim": {}, "rng": {}}
    for name, value in tensors.items():
        prefix, _, rest = name.partition(".")
        if prefix in groups:
            groups[prefix][rest] = value
    if not groups["model"] or not groups["ema"]:
        raise UsageError(f"The checkpoint {path} lacks model or EMA weights.")
    for key, kind in (("rng", dict), ("metrics", dict), ("scheduler", dict), ("optim_groups", list)):
        if not isinstance(sidecar.get(key, kind()), kind):
            raise UsageError(f"The checkpoint sidecar {sidecar_path} has a malformed '{key}'.")
    if not all(isinstance(g, dict) for g in sidecar.get("optim_groups", [])):
        raise UsageError(f"The checkpoint sidecar {sidecar_path} has a malformed 'optim_groups'.")
    rng = dict(sidecar.get("rng", {}))
    rng["torch"] = groups["rng"].get("torch")
    run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    return Checkpoint(config=config, unet_config=unet_config, step=step, model=groups["model"],
                      ema=groups["ema"], metrics=sidecar.get("metrics", {}), run_dir=run_dir, path=path,
                      optim=groups["optim"], optim_groups=sidecar.get("optim_groups", []),
                      scheduler=sidecar.get("scheduler", {}), rng=rng)


def checkpoint_summary(ck: Checkpoint) -> dict[str, Any]:
    return {"path": str(ck.path), "step": ck.step, "metrics": ck.metrics}
