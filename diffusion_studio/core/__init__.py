"""The numpy-only core: schedules, forward process, samplers, guidance, bundle format, images.

No torch, onnxruntime or Qt is imported here (a test enforces it). PNG metadata
(`diffusion_studio.core.png_meta`, needs Pillow) and the Shapes renderer
(`diffusion_studio.core.shapes`) are imported from their modules.
"""

from diffusion_studio.core.bundle import BundleSpec, parse_model_json, read_model_json, write_model_json
from diffusion_studio.core.forward import eps_from_x0, q_posterior, q_sample, q_step, x0_from_eps
from diffusion_studio.core.guidance import guided_eps_fn
from diffusion_studio.core.images import from_uint8, make_grid, to_uint8
from diffusion_studio.core.samplers import DdpmVariance, SamplerKind, make_timesteps, parse_sampler
from diffusion_studio.core.sampling import Denoiser, EpsFn, Step, sample
from diffusion_studio.core.schedule import Schedule, ScheduleKind, make_schedule

__all__ = [
    "BundleSpec",
    "parse_model_json",
    "read_model_json",
    "write_model_json",
    "eps_from_x0",
    "q_posterior",
    "q_sample",
    "q_step",
    "x0_from_eps",
    "guided_eps_fn",
    "from_uint8",
    "make_grid",
    "to_uint8",
    "DdpmVariance",
    "SamplerKind",
    "make_timesteps",
    "parse_sampler",
    "Denoiser",
    "EpsFn",
    "Step",
    "sample",
    "Schedule",
    "ScheduleKind",
    "make_schedule",
]
