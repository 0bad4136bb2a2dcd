"""Overfitting one image: Algorithm 1 on a single (image, caption) pair, then the app's sampler
(core.sampling_loop through TorchDenoiser) must draw that image back from pure noise.

With one training image the optimal ε-predictor is known in closed form,
ε*(x_t, t) = (x_t − √ᾱ_t x_0) / √(1−ᾱ_t), so a net that learned it turns every seed into x_0.
The bound: the image's own mean colour is 0.31 away from it (mean absolute error on a
[0, 1] scale) and the untrained net's samples 0.47–0.55; after 300 steps the
samples measured 0.02–0.09 (mean 0.05), so the test asks for a mean below 0.10 and every
sample below 0.16 — a third of the trivial error — while the untrained net stays above 0.25.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from diffusion_studio.training.samples import sample_images
from diffusion_studio.training.trainer import Trainer

from .conftest import tiny_config, tiny_unet

CAPTION = "a red square between blue and yellow"


def target_image() -> np.ndarray:
    img = np.zeros((8, 8, 3), np.uint8)
    img[:, :4], img[:, 4:], img[2:6, 2:6] = (40, 90, 220), (240, 210, 40), (220, 40, 40)
    return img


def mean_abs_error(samples: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-sample mean |sample − target| on a [0, 1] scale."""
    return np.abs(samples.astype(np.float64) - target).mean(axis=(1, 2, 3)) / 255.0


@pytest.mark.slow  # 300 training steps; test_trainer trains and samples a grid in the default run
def test_overfitting_one_image_makes_the_sampler_reproduce_it(tmp_path, text_encoder):
    data = tmp_path / "one"
    data.mkdir()
    target = target_image()
    Image.fromarray(target).save(data / "image.png")
    (data / "image.txt").write_text(CAPTION)
    cfg = tiny_config(image_size=8, unet=replace(tiny_unet(8), base_channels=16), dataset=f"folder:{data}",
                      steps=300, batch_size=16, lr=5e-3, warmup_steps=20, p_uncond=0.0, ema_decay=0.99,
                      log_every=100, checkpoint_every=300)
    trainer = Trainer(cfg, tmp_path / "run", text_encoder=text_encoder)

    def draw(model) -> np.ndarray:
        # the training sample-grid path: core.sampling_loop.sample + TorchDenoiser, DDIM, 20 steps
        return sample_images(model, trainer.schedule, trainer.text.encode, [CAPTION] * 4, image_size=8,
                             steps=20, guidance=1.0, seed=1, sampler="ddim")

    before = mean_abs_error(draw(trainer.ema.model), target)
    trivial = np.abs(target / 255.0 - target.mean(axis=(0, 1)) / 255.0).mean()
    assert trivial > 0.3 and before.min() > 0.25

    result = trainer.run()
    assert result.step == 300 and result.metrics["loss"] < 0.06
    after = mean_abs_error(draw(trainer.ema.model), target)
    assert after.mean() < 0.10 and after.max() < 0.16, after
