"""Caption embeddings for training, from the app's own ONNX text encoder, cached per caption.

New captions are encoded in chunks; with the padding fixed at max_tokens each row's embedding
does not depend on the other rows (tested bit for bit), so a resumed run sees identical
conditioning, and so does the app, which encodes prompts with the same `TextEncoder`. The
cache keeps only the real tokens of each caption; padding rows are zero (the U-Net masks
them out anyway).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np


class PromptEncoder(Protocol):
    max_tokens: int
    embedding_dim: int

    def encode(self, prompts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]: ...


class CaptionCache:
    """encode(captions) -> (context float32 [N, L, D], context_mask float32 [N, L])."""

    def __init__(self, encoder: PromptEncoder) -> None:
        self.encoder = encoder
        self.max_tokens = int(encoder.max_tokens)
        self.embedding_dim = int(encoder.embedding_dim)
        self._cache: dict[str, np.ndarray] = {}  # caption -> context of its real tokens [n, D]

    def __len__(self) -> int:
        return len(self._cache)

    def _add(self, captions: Sequence[str], chunk: int = 64) -> None:
        missing = list(dict.fromkeys(c for c in captions if c not in self._cache))
        for i in range(0, len(missing), chunk):
            part = missing[i : i + chunk]
            context, mask = self.encoder.encode(part)
            for caption, ctx, m in zip(part, context, mask):
                self._cache[caption] = np.ascontiguousarray(ctx[: int(m.sum())], dtype=np.float32)

    def encode(self, captions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        self._add(captions)
        context = np.zeros((len(captions), self.max_tokens, self.embedding_dim), np.float32)
        mask = np.zeros((len(captions), self.max_tokens), np.float32)
        for i, caption in enumerate(captions):
            tokens = self._cache[caption]
            context[i, : len(tokens)] = tokens
            mask[i, : len(tokens)] = 1.0
        return context, mask
