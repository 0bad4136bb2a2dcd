"""Prompt -> token embeddings with the shared MiniLM ONNX encoder and its tokenizer.

The same class embeds captions during training and prompts in the app, so both see
identical conditioning. Output: context float32 [N, L, D] (last hidden state) and
context_mask float32 [N, L] (1 = real token, 0 = padding). The empty prompt "" is the
unconditional input of classifier-free guidance ([CLS] [SEP]).
"""

from __future__ import annotations

import re
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from diffusion_studio.core.files import read_json_file, resolve_inside
from diffusion_studio.errors import BundleError
from diffusion_studio.inference.hash_cache import cached_sha256
from diffusion_studio.paths import text_encoder_dir

ENCODER_FILE = "text_encoder.onnx"
TOKENIZER_FILE = "tokenizer.json"
INFO_FILE = "encoder.json"


# Lone surrogates (U+D800-U+DFFF) are not Unicode text: Python turns bytes of a command line that
# are not valid UTF-8 into them (surrogateescape), and the tokenizer rejects them with a TypeError.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def replace_undecodable(text: str) -> tuple[str, int]:
    """`text` with every lone surrogate (an undecodable byte) replaced by U+FFFD, and how many there were."""
    return _LONE_SURROGATE.subn("\ufffd", text)


def file_sha256(path: Path) -> str:
    """sha256 of an encoder file; unchanged files are not re-read (inference.hash_cache)."""
    return cached_sha256(path, "text encoder file", error=BundleError)


def _confined(folder: Path, name: str) -> Path:
    return resolve_inside(folder, name, f"the text encoder file {name!r}", error=BundleError)


def _read_info(path: Path) -> dict[str, object]:
    """encoder.json (facts about the encoder, optional): a JSON object, or one BundleError sentence."""
    if not path.exists():
        return {}
    info = read_json_file(path, f"the text encoder's {INFO_FILE}", error=BundleError)
    if not isinstance(info, dict):
        raise BundleError(
            f"the text encoder's {INFO_FILE} {str(path)!r} must hold a JSON object, got {type(info).__name__}."
        )
    return info


class TextEncoder:
    """Tokenizer + ONNX text encoder; embeddings of repeated prompts are cached."""

    def __init__(
        self,
        directory: Path | str | None = None,
        max_tokens: int = 32,
        providers: Sequence[str] | None = None,
        cache_size: int = 50_000,
        confine: bool = False,
    ) -> None:
        """`confine=True` (a bundle's own encoder) refuses files whose resolved path leaves `directory`."""
        import onnxruntime as ort
        from tokenizers import Tokenizer

        folder = Path(directory) if directory is not None else text_encoder_dir()
        encoder_path, tokenizer_path, info_path = (
            _confined(folder, name) if confine else folder / name for name in (ENCODER_FILE, TOKENIZER_FILE, INFO_FILE)
        )
        for path in (encoder_path, tokenizer_path):
            if not path.is_file():
                raise BundleError(f"The text encoder file {path} is missing.")
        if not 2 <= max_tokens <= 512:
            raise BundleError(f"max_tokens must be between 2 and 512, got {max_tokens}.")
        self.info = _read_info(info_path)  # before the slow steps: a bad encoder.json fails at once
        self.directory = folder
        self.max_tokens = int(max_tokens)
        self.sha256 = file_sha256(encoder_path)
        self.tokenizer_sha256 = file_sha256(tokenizer_path)
        try:
            self._tokenizer = Tokenizer.from_file(str(tokenizer_path))
        except Exception as exc:  # tokenizers raises a bare Exception on bad JSON
            raise BundleError(f"The tokenizer file {tokenizer_path} cannot be read ({exc}).") from exc
        self._tokenizer.enable_truncation(max_length=self.max_tokens)
        self._tokenizer.enable_padding(length=self.max_tokens, pad_id=0, pad_token="[PAD]")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = 1  # ~3 ms per prompt; leave the cores to the U-Net
        try:
            self._session = ort.InferenceSession(
                str(encoder_path), options, providers=list(providers or ["CPUExecutionProvider"])
            )
        except Exception as exc:
            raise BundleError(f"The text encoder {encoder_path} is not a valid ONNX model.") from exc
        self.embedding_dim = int(self._session.get_outputs()[0].shape[-1])
        self._cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def tokenize(self, prompts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """input_ids and attention_mask, int64 [N, L]; long prompts are truncated with a warning."""
        prompts = [replace_undecodable(str(p))[0] for p in prompts]  # never a TypeError
        encodings = self._tokenizer.encode_batch(list(prompts))
        for prompt, enc in zip(prompts, encodings):
            if enc.overflowing:
                warnings.warn(
                    f"The prompt {prompt[:40]!r}… is longer than {self.max_tokens} tokens; "
                    "the rest is ignored.",
                    stacklevel=3,
                )
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        return ids, mask

    def _run(self, prompts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        ids, mask = self.tokenize(prompts)
        (hidden,) = self._session.run(None, {"input_ids": ids, "attention_mask": mask})
        return hidden.astype(np.float32), mask.astype(np.float32)

    def encode(self, prompts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """context [N, L, D] float32 and context_mask [N, L] float32 for the prompts."""
        prompts = [replace_undecodable(str(p))[0] for p in prompts]  # undecodable bytes -> U+FFFD
        with self._lock:
            missing = sorted({p for p in prompts if p not in self._cache})
            fresh: dict[str, tuple[np.ndarray, np.ndarray]] = {}
            if missing:
                hidden, mask = self._run(missing)
                fresh = {prompt: (hidden[i], mask[i]) for i, prompt in enumerate(missing)}
            pairs = [fresh[p] if p in fresh else self._cache[p] for p in prompts]
            if len(self._cache) + len(fresh) > self._cache_size:
                self._cache.clear()
            if len(fresh) <= self._cache_size:
                self._cache.update(fresh)
        empty = (0, self.max_tokens, self.embedding_dim)
        context = np.stack([c for c, _ in pairs]) if pairs else np.zeros(empty, np.float32)
        context_mask = np.stack([m for _, m in pairs]) if pairs else np.zeros((0, self.max_tokens), np.float32)
        return context, context_mask
