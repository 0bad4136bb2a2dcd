"""Tiny random Stable-Diffusion-family pipelines for the latent tests (issue 16).

`build_tiny_sd_pipeline(tmp_path)` saves a StableDiffusionPipeline built from scratch with
diffusers and transformers (no download): a tiny UNet2DConditionModel on 4×8×8 latents, a tiny
AutoencoderKL (4 latent channels, downsampling factor 2, so 16×16 pixels), a 2-layer CLIP text
model (hidden size 32) and a CLIPTokenizer over a small byte-level BPE vocabulary that this
module writes (every byte, alone and word-final, a few dozen merges, the two specials).
Weights are random (seeded): the tests check parity and plumbing, never image quality.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
MAX_LENGTH = 77
TEXT_DIM = 32
LATENT_CHANNELS = 4
LATENT_SIZE = 8
VAE_FACTOR = 2
SCALING_FACTOR = 0.18215
# Merges in order; each joins two symbols already in the vocabulary ("</w>" ends a word).
WORDS = ("the", "cat", "dog", "photo", "of", "a", "red", "blue", "on", "in", "and", "house", "tree",
         "painting", "sky", "green", "with", "at", "night", "sun")


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map of the 256 bytes to printable characters (byte-level BPE)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def clip_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A small CLIP-style vocabulary (every byte symbol alone and with "</w>") and merges spelling WORDS."""
    symbols = list(bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for s in symbols:
        vocab[s] = len(vocab)
    for s in symbols:
        vocab[s + "</w>"] = len(vocab)
    merges: list[tuple[str, str]] = []
    for word in WORDS:  # left to right: ((w o) r) d</w>
        pieces = [*word[:-1], word[-1] + "</w>"]
        while len(pieces) > 1:
            pair = (pieces[0], pieces[1])
            joined = pieces[0] + pieces[1]
            if pair not in merges:
                merges.append(pair)
            if joined not in vocab:
                vocab[joined] = len(vocab)
            pieces = [joined, *pieces[2:]]
    vocab[BOS] = len(vocab)
    vocab[EOS] = len(vocab)
    return vocab, merges


def write_clip_tokenizer_files(folder: Path, pad_token: str = EOS) -> Path:
    """vocab.json, merges.txt and the tokenizer configs of a CLIPTokenizer in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = clip_vocab_and_merges()
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    lines = ["#version: 0.2", *(f"{a} {b}" for a, b in merges)]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": MAX_LENGTH, "bos_token": BOS,
              "eos_token": EOS, "unk_token": EOS, "pad_token": pad_token, "do_lower_case": True}
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    special = {"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": pad_token}
    (folder / "special_tokens_map.json").write_text(json.dumps(special), encoding="utf-8")
    return folder


def load_clip_tokenizer(folder: Path) -> Any:
    """transformers' CLIPTokenizer from the files above (the reference the tests compare against)."""
    from transformers import CLIPTokenizer

    config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    return CLIPTokenizer(vocab=json.loads((folder / "vocab.json").read_text(encoding="utf-8")),
                         merges=[tuple(line.split()) for line in
                                 (folder / "merges.txt").read_text(encoding="utf-8").splitlines()[1:] if line],
                         pad_token=config["pad_token"], model_max_length=config["model_max_length"])


def build_tiny_sd_components(scheduler: str = "ddim", pad_token: str = EOS, tokenizer_dir: Path | None = None,
                             prediction_type: str = "epsilon") -> dict[str, Any]:
    """The pipeline's parts in memory (seeded, eval, float32); `tokenizer_dir` receives the tokenizer files."""
    import tempfile

    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    folder = tokenizer_dir or Path(tempfile.mkdtemp(prefix="tiny-clip-"))
    write_clip_tokenizer_files(folder, pad_token)
    tokenizer = load_clip_tokenizer(folder)
    vocab, _ = clip_vocab_and_merges()
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=LATENT_SIZE, in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS, layers_per_block=1,
        block_out_channels=(32, 64), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=TEXT_DIM, attention_head_dim=(2, 4),
        norm_num_groups=32,
    )
    torch.manual_seed(1)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), layers_per_block=1,
        latent_channels=LATENT_CHANNELS, norm_num_groups=8, sample_size=LATENT_SIZE * VAE_FACTOR,
        scaling_factor=SCALING_FACTOR,
    )
    torch.manual_seed(2)
    text_config = CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=TEXT_DIM, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=MAX_LENGTH, bos_token_id=vocab[BOS], eos_token_id=vocab[EOS],
        pad_token_id=vocab[pad_token] if pad_token in vocab else 1,
    )
    text_encoder = CLIPTextModel(text_config)
    common = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
              "steps_offset": 1, "prediction_type": prediction_type}
    if scheduler == "ddim":
        sched: Any = DDIMScheduler(clip_sample=False, set_alpha_to_one=False, **common)
    elif scheduler == "pndm":
        sched = PNDMScheduler(skip_prk_steps=True, set_alpha_to_one=False, **common)
    elif scheduler == "ddpm":
        sched = DDPMScheduler(clip_sample=False, variance_type="fixed_small", **common)
    else:
        raise ValueError(f"unknown scheduler {scheduler!r}")
    for module in (unet, vae, text_encoder):
        module.eval()
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer, "scheduler": sched}


def build_tiny_sd_pipeline(tmp_path: Path, name: str = "tiny-sd", scheduler: str = "ddim", pad_token: str = EOS,
                           prediction_type: str = "epsilon") -> Path:
    """Save a tiny random StableDiffusionPipeline (safetensors) under tmp_path/name and return the folder.

    The tokenizer/ folder always holds vocab.json and merges.txt (written here, whatever
    transformers' save_pretrained writes beside them).
    """
    from diffusers import StableDiffusionPipeline

    out = Path(tmp_path) / name
    parts = build_tiny_sd_components(scheduler, pad_token, Path(tmp_path) / f"{name}-tokenizer-src", prediction_type)
    pipe = StableDiffusionPipeline(**parts, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(str(out), safe_serialization=True)
    write_clip_tokenizer_files(out / "tokenizer", pad_token)
    return out
