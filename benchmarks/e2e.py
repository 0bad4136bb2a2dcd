"""One image end to end: DPM-Solver++(2M) 20 steps with classifier-free guidance, batch 1.

Three runs of the same loop length, measured side by side: ours (the app's Pipeline over ONNX
Runtime), our U-Net in torch eager through the very same Pipeline loop, and diffusers (a
same-size UNet2DConditionModel + DPMSolverMultistepScheduler, cond and uncond in one batch of
2 per step, ε̂ = ε̂_u + w (ε̂_c − ε̂_u), the same 384-d MiniLM prompt embeddings).
"""

from __future__ import annotations

from typing import Any

from benchmarks import peers
from benchmarks.timing import median_seconds, ratio

STEPS = 20


def _ours(bundle: Any, steps: int, repeat: int) -> tuple[float, float]:
    from diffusion_studio.inference.pipeline import GenerationRequest, Pipeline

    pipeline = Pipeline(bundle)
    request = GenerationRequest(prompt=peers.PROMPT, sampler="dpmpp-2m", steps=steps, seed=0, preview=False)
    guidance = float(pipeline.resolve(request).guidance or 0.0)
    return median_seconds(lambda: pipeline.generate(request), repeat), guidance


def _diffusers(bundle: Any, guidance: float, steps: int, repeat: int) -> tuple[float, int]:
    import torch
    from diffusers import DPMSolverMultistepScheduler

    unet = peers.diffusers_unet().eval()
    size, channels = bundle.spec.image_size, bundle.spec.channels
    scheduler: Any = DPMSolverMultistepScheduler(
        num_train_timesteps=bundle.spec.T, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
        algorithm_type="dpmsolver++", solver_order=2,
    )

    def generate() -> Any:
        context, mask = bundle.text_encoder.encode([peers.PROMPT, ""])  # cached, as in ours
        ctx, msk = torch.from_numpy(context), torch.from_numpy(mask)
        generator = torch.Generator().manual_seed(0)
        x = torch.randn((1, channels, size, size), generator=generator)
        scheduler.set_timesteps(steps)
        with torch.inference_mode():
            for t in scheduler.timesteps:
                out = unet(torch.cat([x, x]), t, encoder_hidden_states=ctx, encoder_attention_mask=msk).sample
                cond, uncond = out.chunk(2)
                x = scheduler.step(uncond + guidance * (cond - uncond), t, x).prev_sample
        return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()

    return median_seconds(generate, repeat), peers.parameters(unet)


def run(bundle: Any, *, repeat: int, steps: int = STEPS) -> dict[str, Any]:
    ours_s, guidance = _ours(bundle, steps, repeat)
    model, weights = peers.our_torch_unet(bundle)
    eager_s, _ = _ours(peers.with_eager_unet(bundle, model), steps, repeat)
    result: dict[str, Any] = {
        "sampler": "dpmpp-2m", "steps": steps, "guidance": guidance, "batch": 1,
        "ours_s": ours_s, "provider": bundle.provider_info.active,
        "torch_eager_s": eager_s, "torch_eager_weights": weights,
        "speedup_vs_torch_eager": ratio(eager_s, ours_s),
        "diffusers_s": None, "diffusers_parameters": None, "speedup_vs_diffusers": None,
        "diffusers_skipped": peers.diffusers_missing(),
    }
    if result["diffusers_skipped"] is None:
        diffusers_s, params = _diffusers(bundle, guidance, steps, repeat)
        result.update(diffusers_s=diffusers_s, diffusers_parameters=params,
                      speedup_vs_diffusers=ratio(diffusers_s, ours_s))
    return result
