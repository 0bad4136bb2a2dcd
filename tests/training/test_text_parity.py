"""One text encoder for training and the app.

1. The torch MiniLM (training.minilm.MiniLMTokens, fp32) and its shared ONNX export
   (inference.text_encoder.TextEncoder; weights stored in fp16, computed in fp32) agree on every real
   token: measured max |Δ| 1.2e-3–1.3e-3 and min token cosine 0.9999996; asserted < 3e-3 and
   > 0.99999. Padding positions are not compared: the U-Net masks them out.
2. Training's CaptionCache returns exactly what TextEncoder returns (bit for bit on the real
   tokens, zeros on padding), and the U-Net's ε is the same for both (bit-identical here), so the conditioning
   the model is trained on is the conditioning the app feeds it.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from diffusion_studio.training.captions import CaptionCache
from diffusion_studio.training.unet import UNet

from .conftest import tiny_unet

PROMPTS = [
    "a large red circle in the top left on a black background",
    "",
    "a blue triangle",
    "Small YELLOW square, center — on white!",
    "ünïcödé and emoji ☃ in a prompt",
    "a very long prompt that goes on " * 6,  # truncated to max_tokens
]


@pytest.fixture(scope="module")
def minilm():
    from diffusion_studio.training.minilm import MiniLMTokens

    with torch.random.fork_rng():
        return MiniLMTokens()


def test_torch_minilm_matches_the_onnx_export(minilm, text_encoder):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the long prompt's truncation warning
        ids, attention = text_encoder.tokenize(PROMPTS)
        context, mask = text_encoder.encode(PROMPTS)
    assert minilm.embedding_dim == text_encoder.embedding_dim == 384
    assert ids.shape == (len(PROMPTS), 32) and attention[1].sum() == 2 and attention[-1].sum() == 32
    np.testing.assert_array_equal(mask, attention.astype(np.float32))
    with torch.no_grad():
        hidden = minilm(torch.from_numpy(ids), torch.from_numpy(attention)).numpy()
    real = mask.astype(bool)
    a, b = hidden[real], context[real]
    assert np.abs(a - b).max() < 3e-3
    cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cosine.min() > 0.99999
    # the embeddings are not trivially alike: different prompts' [CLS] tokens differ a lot
    assert np.abs(hidden[0, 0] - hidden[2, 0]).max() > 0.1


def test_caption_cache_is_exactly_the_app_encoder(text_encoder):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        app_context, app_mask = text_encoder.encode(PROMPTS)
        cache = CaptionCache(text_encoder)
        train_context, train_mask = cache.encode(PROMPTS[::-1] + PROMPTS)  # order and repeats do not matter
    train_context, train_mask = train_context[len(PROMPTS):], train_mask[len(PROMPTS):]
    assert len(cache) == len(PROMPTS)
    np.testing.assert_array_equal(train_mask, app_mask)
    real = app_mask.astype(bool)
    np.testing.assert_array_equal(train_context[real], app_context[real])
    assert not train_context[~real].any()
    # the U-Net sees no difference: padding is masked in cross-attention and the pooled text
    torch.manual_seed(0)
    unet = UNet(tiny_unet(16)).eval()
    x = torch.randn(len(PROMPTS), 3, 16, 16)
    t = torch.arange(1, len(PROMPTS) + 1) * 150
    with torch.no_grad():
        eps_app = unet(x, t, torch.from_numpy(app_context), torch.from_numpy(app_mask))
        eps_train = unet(x, t, torch.from_numpy(train_context), torch.from_numpy(train_mask))
    torch.testing.assert_close(eps_train, eps_app, rtol=0, atol=1e-6)  # bit-identical here
