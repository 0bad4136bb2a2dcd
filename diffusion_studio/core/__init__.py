"""The numpy-only core: schedules, forward process, samplers, guidance, bundle format, images.

No torch, onnxruntime or Qt is imported here (a test enforces it). PNG metadata
(`diffusion_studio.core.png_meta`, needs Pillow) and the Shapes renderer
(`diffusion_studio.core.shapes`) are imported from their modules.

The names below load on first use (PEP 562), so that `diffusion_studio.core.params` (pure
Python) is importable by argparse front ends without loading numpy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from diffusion_studio.core.bundle import (
        BundleSpec,
        parse_model_json,
        read_model_json,
        write_model_json,
    )
    from diffusion_studio.core.forward import (
        eps_from_x0,
        q_posterior,
        q_sample,
        q_step,
        x0_from_eps,
    )
    from diffusion_studio.core.guidance import guided_eps_fn
    from diffusion_studio.core.images import from_uint8, make_grid, to_uint8
    from diffusion_studio.core.params import DdpmVariance, SamplerKind, parse_sampler
    from diffusion_studio.core.sampler_steps import make_timesteps
    from diffusion_studio.core.sampling_loop import Denoiser, EpsFn, Step, sample
    from diffusion_studio.core.schedule import Schedule, ScheduleKind, make_schedule

_MODULES: dict[str, tuple[str, ...]] = {
    "bundle": ("BundleSpec", "parse_model_json", "read_model_json", "write_model_json"),
    "forward": ("eps_from_x0", "q_posterior", "q_sample", "q_step", "x0_from_eps"),
    "guidance": ("guided_eps_fn",),
    "images": ("from_uint8", "make_grid", "to_uint8"),
    "params": ("DdpmVariance", "SamplerKind", "parse_sampler"),
    "sampler_steps": ("make_timesteps",),
    "sampling_loop": ("Denoiser", "EpsFn", "Step", "sample"),
    "schedule": ("Schedule", "ScheduleKind", "make_schedule"),
}
_WHERE = {name: module for module, names in _MODULES.items() for name in names}

__all__ = [
    "BundleSpec",
    "DdpmVariance",
    "Denoiser",
    "EpsFn",
    "SamplerKind",
    "Schedule",
    "ScheduleKind",
    "Step",
    "eps_from_x0",
    "from_uint8",
    "guided_eps_fn",
    "make_grid",
    "make_schedule",
    "make_timesteps",
    "parse_model_json",
    "parse_sampler",
    "q_posterior",
    "q_sample",
    "q_step",
    "read_model_json",
    "sample",
    "to_uint8",
    "write_model_json",
    "x0_from_eps",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
