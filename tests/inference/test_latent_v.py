"""A v-prediction Stable Diffusion folder (SD 2.x style: pad token "!") in the Optimum layout samples as diffusers'
StableDiffusionPipeline does with its own DDIM configuration but set_alpha_to_one (see test_latent.py), within 1e-3."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from diffusion_studio.core.prediction import PredictionKind
from diffusion_studio.inference.latent import LatentPipeline, load_latent
from diffusion_studio.inference.pipeline import GenerationRequest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1]))
from latent_models import build_tiny_sd_pipeline  # noqa: E402
from latent_optimum import write_optimum_folder  # noqa: E402
from test_latent import _matching_ddim  # noqa: E402

pytest.importorskip("diffusers")


def test_v_prediction_ddim_matches_diffusers(tmp_path: Path) -> None:
    import torch
    from diffusers import StableDiffusionPipeline

    sd = build_tiny_sd_pipeline(tmp_path, prediction_type="v_prediction", pad_token="!")
    model = load_latent(write_optimum_folder(sd, tmp_path / "optimum", timestep_dtype="float32"), "cpu")
    assert model.prediction is PredictionKind.V_PREDICTION and model.t_dtype is np.float32
    ids, _ = model.tokenizer(["a cat"])
    assert ids[0, -1] == model.tokenizer.pad_id != ids[0, 0]  # padded with "!", not <|endoftext|>
    pipe: Any = StableDiffusionPipeline.from_pretrained(str(sd), safety_checker=None, feature_extractor=None,
                                                        requires_safety_checker=False)
    pipe.scheduler = _matching_ddim(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    x_T = np.random.default_rng(12).standard_normal((1, 4, 8, 8), dtype=np.float32)
    with torch.no_grad():
        theirs = pipe("a green tree", negative_prompt="night", num_inference_steps=10, guidance_scale=5.0,
                      latents=torch.from_numpy(x_T), output_type="np").images[0]
    result = LatentPipeline(model).iterate(GenerationRequest(prompt="a green tree", negative_prompt="night",
                                                             sampler="ddim", steps=10, guidance=5.0, seed=12))
    *_, last = result.steps
    ours = (last.x_prev[0].transpose(1, 2, 0) + 1.0) / 2.0
    assert np.abs(ours - theirs).max() < 1e-3 and np.abs(theirs - 0.5).max() > 0.05
